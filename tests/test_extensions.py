"""Optimizers, regularizers and schedules from a researcher's own module and config folder."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from adrlab.cli import main
from adrlab.config import compose, config_hash
from adrlab.errors import ConfigError
from adrlab.extensions import check_targets, declared_metric_names, source_digest
from adrlab.model import Transformer
from adrlab.optim import resolve_decay, set_step_hyperparams
from adrlab.optim.external import WrappedOptimizer, build_run_optimizer

REPO = Path(__file__).resolve().parents[1]
LION = REPO / "examples" / "lion"
SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.head_dim=16", "model.d_ff=64"]


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config-dir and ADR folders extend the environment and sys.path: undo that per test."""
    monkeypatch.setenv("ADRLAB_CONFIG_DIRS", "")  # restored (removed) after the test
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))


MODULE = '''
import torch


class NotAnOptimizer:
    def __init__(self, params, lr=0.1):
        pass


class Plain(torch.optim.SGD):
    adrlab_metric_names = ("plain_calls",)

    def __init__(self, params, lr=0.1, momentum=0.0, dampening=0.0):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening)
        self.calls = 0

    def step(self, closure=None):
        self.calls += 1
        return super().step(closure)

    def adrlab_stats(self):
        return {"plain_calls": float(self.calls)}


def factory(param_groups, lr=0.1, nesterov=False):
    return torch.optim.SGD(param_groups, lr=lr, momentum=0.9, nesterov=nesterov)


def half_after(step, total_steps, fraction=0.5):
    return 1.0 if step < fraction * total_steps else 0.5


class Pull:
    """A penalty pulling weights toward 0.01 (decoupled form)."""

    def __init__(self, center=0.01):
        self.center = center

    def decoupled(self, param):
        return param - self.center
'''


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A researcher's folder: a module (on sys.path) and a config folder with four options."""
    name = f"mymod_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = tmp_path / "conf"
    options = {
        "optimizer/sgdm.yaml": "_target_: torch.optim.SGD\nlr: 0.05\nmomentum: 0.9\n",
        "optimizer/plain.yaml": f"_target_: {name}.Plain\n_partial_: true\nlr: 0.1\nrouting: matrices\n",
        "optimizer/fact.yaml": f"_target_: {name}.factory\nlr: 0.05\nnesterov: true\n",
        "optimizer/notopt.yaml": f"_target_: {name}.NotAnOptimizer\nlr: 0.1\n",
        "optimizer/typo.yaml": "_target_: torch.optim.SGD\nlr: 0.05\nmomentom: 0.9\n",
        "optimizer/missing.yaml": "_target_: nosuchpkg_xyz.Opt\nlr: 0.05\n",
        "optimizer/broken.yaml": f"_target_: {name}_broken.Opt\nlr: 0.05\n",
        "lr_schedule/half.yaml": f"_target_: {name}.half_after\nfraction: 0.25\n",
        "regularizer/pull.yaml": f"_target_: {name}.Pull\ncenter: 0.0\nscope: matrices\n",
    }
    for rel, text in options.items():
        (conf / rel).parent.mkdir(parents=True, exist_ok=True)
        (conf / rel).write_text(text)
    (tmp_path / f"{name}_broken.py").write_text("import torch\nraise RuntimeError('half-written idea')\n")
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def _compose(user: Path, *overrides: str):
    return compose([*SMALL, *overrides], config_dirs=[str(user / "conf")])


def _model_and_optimizer(cfg):
    torch.manual_seed(0)
    model = Transformer(cfg.model, vocab_size=64)
    return model, build_run_optimizer(model, cfg, resolve_decay(cfg, 10))


def _step(model, optimizer, collect: bool = False) -> None:
    x = torch.randint(0, 64, (4, 9), generator=torch.Generator().manual_seed(1))
    loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, 64), x[:, 1:].reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.collect_stats = collect
    optimizer.step()


def test_config_dir_option_is_named_after_the_file(user: Path, capsys) -> None:
    cfg = _compose(user, "optimizer=sgdm")
    assert cfg.optimizer.name == "sgdm" and cfg.optimizer._target_ == "torch.optim.SGD"
    assert main(["run", "--config-dir", str(user / "conf"), "optimizer=sgdm", "--print-config"]) == 0
    assert "_target_: torch.optim.SGD" in capsys.readouterr().out
    assert (
        main(["run", "-cd", str(user / "conf"), "optimizer=sgdm", "optimizer.momentum=0.5", "--print-config"])
        == 0
    )
    assert "momentum: 0.5" in capsys.readouterr().out


@pytest.mark.parametrize(
    "option, fragments",
    [
        ("missing", ["nosuchpkg_xyz", "ModuleNotFoundError", "PYTHONPATH"]),
        ("broken", ["_broken", "RuntimeError: half-written idea"]),
        ("notopt", ["NotAnOptimizer", "not an optimizer"]),
        ("typo", ["optimizer.momentom is not a hyperparameter of torch.optim.SGD", "momentum", "nesterov"]),
    ],
)
def test_bad_targets_exit_2_before_training(user: Path, option: str, fragments: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config-dir", str(user / "conf"), f"optimizer={option}", *SMALL])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_bad_target_trains_nothing(user: Path, runs_dir: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config-dir", str(user / "conf"), "optimizer=notopt", *SMALL])
    assert exc.value.code == 2
    assert not (runs_dir / "mlflow.db").exists()


def test_sqrt_v_needs_the_declared_capability(user: Path) -> None:
    cfg = _compose(user, "optimizer=sgdm", "regularizer=sqrt_v")  # composes: decided at build
    with pytest.raises(ConfigError, match=r"declares no second moment.*adrlab_sqrt_v"):
        check_targets(cfg)


def test_decoupled_and_l2_around_sgd_match_the_formulas(user: Path) -> None:
    for reg, torch_wd in (("decoupled", 0.0), ("l2", 0.1)):
        cfg = _compose(user, "optimizer=sgdm", "optimizer.momentum=0.0", f"regularizer={reg}")
        model, optimizer = _model_and_optimizer(cfg)
        assert isinstance(optimizer, WrappedOptimizer)
        reference = Transformer(cfg.model, vocab_size=64)
        reference.load_state_dict(model.state_dict())
        plain = torch.optim.SGD(reference.parameters(), lr=0.05, weight_decay=torch_wd)
        if reg == "decoupled":  # θ ← θ(1 − ηλ) − η·g, with g taken at θ
            _step(reference, plain)
            with torch.no_grad():
                for p, q in zip(reference.parameters(), model.parameters(), strict=True):
                    p.add_(q, alpha=-0.05 * 0.1)
        else:
            _step(reference, plain)
        set_step_hyperparams(optimizer, 1.0, 1.0)
        _step(model, optimizer)
        for p, q in zip(reference.parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_routing_matrices_gives_adamw_the_rest_and_stats_hook(user: Path) -> None:
    cfg = _compose(user, "optimizer=plain")
    model, optimizer = _model_and_optimizer(cfg)
    plain, adamw = optimizer.inner
    mine = {id(p) for g in plain.param_groups for p in g["params"]}
    rest = {id(p) for g in adamw.param_groups for p in g["params"]}
    roles = model.param_roles()
    named = dict(model.named_parameters())
    assert mine == {id(named[n]) for n, r in roles.items() if r == "matrix" and n in named}
    assert mine.isdisjoint(rest) and mine | rest == {id(p) for p in model.parameters()}
    _step(model, optimizer, collect=True)
    assert optimizer.last_stats == {"plain_calls": 1.0}
    assert declared_metric_names(cfg) == ["plain_calls"]


def test_factory_schedule_and_regularizer_targets(user: Path) -> None:
    from adrlab.schedules import build_schedule

    cfg = _compose(user, "optimizer=fact", "lr_schedule=half", "regularizer=pull")
    check_targets(cfg)
    schedule = build_schedule(cfg, total_steps=100, base_lr=0.05, decay=resolve_decay(cfg, 10))
    assert schedule.lr_multiplier(24) == 1.0 and schedule.lr_multiplier(25) == 0.5
    model, optimizer = _model_and_optimizer(cfg)
    reference = Transformer(cfg.model, vocab_size=64)
    reference.load_state_dict(model.state_dict())
    _step(reference, torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, nesterov=True))
    set_step_hyperparams(optimizer, 1.0, 1.0)
    _step(model, optimizer)
    roles = model.param_roles()
    for (name, p), q in zip(reference.named_parameters(), model.parameters(), strict=True):
        # Pull(center=0) on the matrices only (scope), after the step: θ ← θ − η·(θ − 0)
        expected = p * (1 - 0.05) if roles[name] == "matrix" else p
        torch.testing.assert_close(q, expected, rtol=1e-5, atol=1e-7)


def test_hash_follows_the_module_source_without_importing(user: Path) -> None:
    cfg = _compose(user, "optimizer=plain")
    module = next(user.glob("mymod_*[!n].py"))
    before = config_hash(cfg)
    assert module.stem not in sys.modules  # composing and hashing imported nothing
    module.write_text(module.read_text() + "\n# tuned the update\n")
    assert config_hash(cfg) != before
    assert source_digest("torch.optim.SGD").startswith("torch==")


def test_lion_declares_its_metric_without_being_imported() -> None:
    cfg = compose(["optimizer=lion"], config_dirs=[str(LION / "conf")])
    assert declared_metric_names(cfg, [LION]) == ["lion_sign_flip"]
    assert "lion" not in sys.modules
    assert math.isclose(cfg.optimizer.lr, 1e-4)


def test_unknown_option_lists_the_config_dir_options_too(user: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config-dir", str(user / "conf"), "optimizer=sgx", "--print-config"])
    assert exc.value.code == 2
    assert "choose one of: ada_rmsuon, adamw, broken, fact, missing, muon" in capsys.readouterr().err


@pytest.mark.parametrize(
    "regularizer",
    [
        ["regularizer=decoupled", "regularizer.weight_decay=0.5"],
        ["regularizer=l2", "regularizer.weight_decay=0.5"],
        ["regularizer=timescale", "regularizer.epsilon=0.5"],
        ["regularizer=sqrt_v", "regularizer.weight_decay=0.5"],
    ],
)
def test_decay_around_a_target_equals_the_built_in(user: Path, regularizer: list[str]) -> None:
    """adrlab's own AdamW named by `_target_` (its decay off) with adrlab's regularizer around the
    step takes the same steps as the built-in optimizer=adamw with that regularizer."""
    conf = user / "conf" / "optimizer" / "own_adamw.yaml"
    conf.write_text("_target_: adrlab.optim.AdamW\nlr: 5e-4\nweight_decay: 0.0\ndecay_mode: none\n")
    models = []
    for option, reg in (
        ("own_adamw", regularizer),
        ("adamw", regularizer),
        ("own_adamw", ["regularizer=none"]),
    ):
        cfg = _compose(user, f"optimizer={option}", "optimizer.lr=5e-4", *reg)
        model, optimizer = _model_and_optimizer(cfg)
        for _ in range(3):
            set_step_hyperparams(optimizer, 1.0, 1.0)
            _step(model, optimizer)
        models.append(model)
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-8)
    undecayed = torch.cat([p.detach().flatten() for p in models[2].parameters()])
    decayed = torch.cat([p.detach().flatten() for p in models[1].parameters()])
    assert float((undecayed - decayed).abs().max()) > 1e-6  # the regularizer did act
