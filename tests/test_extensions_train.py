"""A `_target_` optimizer through the one training path: resume, run cache, divergence guard, sweeps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adrlab.config import compose
from adrlab.sweep.spec import load_spec
from adrlab.train import train
from tests.conftest import TINY

MODULE = """
import torch


class HeavyBall(torch.optim.SGD):
    def __init__(self, params, lr=0.05, momentum=0.9):
        super().__init__(params, lr=lr, momentum=momentum)
"""


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADRLAB_CONFIG_DIRS", "")  # restored (removed) after the test
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"heavy_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "optimizer").mkdir(parents=True)
    (tmp_path / "conf" / "optimizer" / "heavy.yaml").write_text(
        f"_target_: {name}.HeavyBall\nlr: 0.05\nmomentum: 0.9\n"
    )
    monkeypatch.setenv("ADRLAB_CONFIG_DIRS", str(tmp_path / "conf"))  # as --config-dir does
    yield tmp_path
    sys.modules.pop(name, None)


def test_resume_restores_the_optimizer_state(user: Path, runs_dir: Path) -> None:
    overrides = [*TINY, "trainer.epochs=3", "optimizer=heavy"]
    straight = train(compose(overrides))

    def stop_after_two(epoch: int, _metrics: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(compose([*overrides, "tracking.experiment=cut"]), epoch_callback=stop_after_two)
    resumed = train(compose([*overrides, "tracking.experiment=cut", "resume=true"]))
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
    for a, b in zip(straight.epochs, resumed.epochs, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)  # momentum buffers came back


def test_cache_serves_the_same_source_only(user: Path, runs_dir: Path) -> None:
    cfg = compose([*TINY, "trainer.epochs=1", "optimizer=heavy", "tracking.reuse=true"])
    first = train(cfg)
    assert train(cfg).reused_from == first.run_id
    module = next(user.glob("heavy_*.py"))
    module.write_text(module.read_text().replace("momentum=0.9", "momentum=0.8"))
    assert train(cfg).reused_from is None  # an edited optimizer is trained, not served


def test_divergence_guard_and_sweep_over_its_hyperparameters(user: Path, runs_dir: Path) -> None:
    result = train(compose([*TINY, "optimizer=heavy", "optimizer.lr=1e4", "trainer.grad_clip=0"]))
    assert result.state == "DIVERGED" and result.failure_reason
    spec = user / "heavy_sweep.yaml"
    spec.write_text(
        "name: heavy_sweep\nbase:\n  overrides: [optimizer=heavy]\nn_trials: 2\n"
        "space:\n  optimizer.lr: {type: float, low: 0.01, high: 0.1, log: true}\n"
        "  optimizer.momentum: {type: categorical, choices: [0.8, 0.9]}\n"
        "objective: {metric: val_ppl, statistic: best, direction: minimize}\n"
    )
    loaded = load_spec(str(spec))
    assert loaded.keys == ["optimizer.lr", "optimizer.momentum"]
