"""Parameter routing by module role, decay resolution, derived params, per-step hyperparameters."""

from __future__ import annotations

import math

import pytest
import torch

from adrlab.config import ConfigError, compose
from adrlab.model import Transformer
from adrlab.optim import (
    AdamW,
    AdaRMSuon,
    DecaySpec,
    Muon,
    RMSuon,
    build_optimizer,
    derived_params,
    group_hyperparams,
    param_group_of,
    resolve_decay,
    set_step_hyperparams,
    timescale_lambda,
)

torch.set_num_threads(1)

SMALL = ["model.d_model=32", "model.n_layers=2", "model.d_ff=64", "model.n_heads=2", "model.head_dim=16"]
CLASSES = {"adamw": AdamW, "muon": Muon, "rmsuon": RMSuon, "ada_rmsuon": AdaRMSuon}


def _build(*overrides: str, steps_per_epoch: int = 100):
    cfg = compose([*SMALL, *overrides])
    model = Transformer(cfg.model, vocab_size=64)
    decay = resolve_decay(cfg, steps_per_epoch)
    return cfg, model, decay, build_optimizer(model, cfg, decay)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("name", list(CLASSES))
def test_every_parameter_in_exactly_one_group_by_role(name: str, tie: bool) -> None:
    _, model, _, opt = _build(f"optimizer={name}", f"model.tie_embeddings={str(tie).lower()}")
    assert type(opt) is CLASSES[name]
    all_params = [p for g in opt.param_groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params})  # no parameter twice
    assert {id(p) for p in all_params} == {id(p) for p in model.parameters()}
    roles = model.param_roles()
    named = dict(model.named_parameters())
    for pname, role in roles.items():
        group = param_group_of(opt, named[pname])
        if role == "matrix":
            assert group["role"] == "matrix" and group["structured"] is (name != "adamw")
        else:
            assert group["role"] in ("adamw", "adamw_nodecay") and group["structured"] is False
        assert pname in group["param_names"]
    # The (tied) embedding/head and every 1-D parameter are on the AdamW side, once.
    assert param_group_of(opt, model.embed.weight)["role"] == "adamw"
    if not tie:
        assert model.lm_head is not None
        assert param_group_of(opt, model.lm_head.weight)["role"] == "adamw"
    for p in model.parameters():
        if p.ndim == 1:
            assert param_group_of(opt, p)["structured"] is False
    for group in opt.param_groups:
        for key in ("initial_lr", "initial_weight_decay", "decay_mode", "structured", "role"):
            assert key in group


def test_scope_no_1d_and_matrices() -> None:
    _, model, _, opt = _build("optimizer=rmsuon", "regularizer.scope=no_1d")
    norm = model.blocks[0].attn_norm.weight
    assert param_group_of(opt, norm)["role"] == "adamw_nodecay"
    assert param_group_of(opt, norm)["initial_weight_decay"] == 0.0
    assert param_group_of(opt, model.embed.weight)["initial_weight_decay"] == pytest.approx(0.1)
    _, model, _, opt = _build("optimizer=rmsuon", "regularizer.scope=matrices")
    assert param_group_of(opt, model.embed.weight)["initial_weight_decay"] == 0.0
    q_proj = model.blocks[0].attn.q_proj.weight
    assert param_group_of(opt, q_proj)["initial_weight_decay"] == pytest.approx(0.1)
    assert {g["role"] for g in opt.param_groups} == {"matrix", "adamw_nodecay"}
    # A zero-decay group stays at zero whatever the wd multiplier.
    set_step_hyperparams(opt, 0.5, 3.0)
    assert param_group_of(opt, model.embed.weight)["weight_decay"] == 0.0
    assert group_hyperparams(opt) == {"lr": pytest.approx(1.5e-3), "wd": pytest.approx(0.3), "wd_adamw": 0.0}


def test_adamw_group_hyperparameters_are_separate() -> None:
    _, model, _, opt = _build(
        "optimizer=muon",
        "optimizer.adamw_lr=1e-3",
        "optimizer.adamw_betas=[0.8,0.9]",
        "optimizer.adamw_eps=1e-6",
    )
    adamw = param_group_of(opt, model.embed.weight)
    matrix = param_group_of(opt, model.blocks[0].mlp.up_proj.weight)
    assert (adamw["lr"], adamw["betas"], adamw["eps"]) == (1e-3, (0.8, 0.9), 1e-6)
    assert matrix["lr"] == pytest.approx(3e-3) and matrix["adjust_lr"] == "match_rms_adamw"
    assert matrix["momentum"] == 0.95 and matrix["nesterov"] is True and matrix["ns_steps"] == 5
    assert group_hyperparams(opt) == {"lr": pytest.approx(3e-3), "wd": pytest.approx(0.1), "lr_adamw": 1e-3}
    set_step_hyperparams(opt, 0.5, 0.25)
    assert group_hyperparams(opt) == {
        "lr": pytest.approx(1.5e-3),
        "wd": pytest.approx(0.025),
        "lr_adamw": pytest.approx(5e-4),
    }
    # null adamw settings fall back to the structured group's (here betas from muon.yaml stay separate).
    _, model, _, opt = _build("optimizer=rmsuon")
    adamw = param_group_of(opt, model.embed.weight)
    assert adamw["lr"] == pytest.approx(3e-3) and adamw["betas"] == (0.9, 0.999)
    assert group_hyperparams(opt) == {"lr": pytest.approx(3e-3), "wd": pytest.approx(0.1)}


def test_ada_rmsuon_normalize_flag_reaches_the_group() -> None:
    _, model, _, opt = _build("optimizer=ada_rmsuon", "optimizer.normalize=false")
    assert param_group_of(opt, model.blocks[0].attn.o_proj.weight)["normalize"] is False


def test_regularizer_none_means_no_decay_anywhere() -> None:
    _, _, decay, opt = _build("regularizer=none")
    assert decay == DecaySpec("none", 0.0, "all")
    assert all(g["initial_weight_decay"] == 0.0 and g["decay_mode"] == "none" for g in opt.param_groups)


def test_resolve_decay_timescale_units() -> None:
    cfg = compose(["regularizer=timescale", "regularizer.epsilon=1e-3"])
    decay = resolve_decay(cfg, 1250)
    assert decay.mode == "per_step"
    assert decay.lam == pytest.approx(1 - 1e-3 ** (1 / 1250), rel=1e-12)
    assert (1 - decay.lam) ** 1250 == pytest.approx(1e-3, rel=1e-9)  # ε left after one epoch
    cfg = compose(["regularizer=timescale", "regularizer.units=lr_scaled"])
    assert resolve_decay(cfg, 1250) == DecaySpec("decoupled", timescale_lambda(1e-3, 1250), "all")
    for name in ("l2", "decoupled", "sqrt_v"):
        cfg = compose([f"regularizer={name}", "regularizer.weight_decay=0.25", "regularizer.scope=no_1d"])
        assert resolve_decay(cfg, 10) == DecaySpec(name, 0.25, "no_1d")


def test_derived_params() -> None:
    cfg = compose(["optimizer.lr=1e-4", "regularizer=decoupled", "regularizer.weight_decay=0.1"])
    d = derived_params(cfg, resolve_decay(cfg, 1000), 1000)
    assert d["decay_units"] == "lr_scaled" and d["lambda"] == 0.1 and d["steps_per_epoch"] == 1000
    assert d["per_step_decay"] == pytest.approx(1e-5)
    assert d["tau_iter"] == pytest.approx(1e5) and d["tau_epoch"] == pytest.approx(100.0)
    assert d["predicted_weight_rms"] == pytest.approx(math.sqrt(1e-4 / 0.2))

    cfg = compose(["optimizer.lr=1e-4", "regularizer=timescale", "regularizer.units=per_step"])
    decay = resolve_decay(cfg, 1250)
    d = derived_params(cfg, decay, 1250)
    assert d["decay_units"] == "per_step" and d["per_step_decay"] == pytest.approx(decay.lam)
    assert d["lambda"] == pytest.approx(decay.lam)
    assert d["tau_iter"] == pytest.approx(1 / decay.lam)
    assert d["predicted_weight_rms"] == pytest.approx(1e-4 / math.sqrt(2 * decay.lam))
    # ADR-0001's λ* per step vs wd 0.1 at lr 1e-4: ~550× stronger (DESIGN, Theory).
    assert d["per_step_decay"] / (1e-4 * 0.1) == pytest.approx(550, rel=0.01)

    for reg, units in (("none", "none"), ("sqrt_v", "sqrt_v")):
        cfg = compose([f"regularizer={reg}", "optimizer=adamw"])
        d = derived_params(cfg, resolve_decay(cfg, 10), 10)
        assert d["decay_units"] == units and d["per_step_decay"] == 0.0
        assert math.isinf(d["tau_iter"]) and math.isinf(d["predicted_weight_rms"])
    cfg = compose(["regularizer=l2", "optimizer.lr=1e-3"])
    d = derived_params(cfg, resolve_decay(cfg, 10), 10)
    assert d["decay_units"] == "l2" and d["per_step_decay"] == pytest.approx(1e-4)


def test_refusals_are_config_errors() -> None:
    cfg = compose([*SMALL, "optimizer=muon"])
    model = Transformer(cfg.model, vocab_size=64)
    with pytest.raises(ConfigError, match="keeps no second moment"):
        build_optimizer(model, cfg, DecaySpec("sqrt_v", 1e-5, "all"))


def test_state_dict_round_trip_continues_identically() -> None:
    """Checkpoint/resume: a reloaded optimizer continues exactly as the original."""
    cfg = compose([*SMALL, "optimizer=rmsuon", "lr_schedule=cosine"])
    results = []
    for interrupted in (False, True):
        torch.manual_seed(0)
        model = Transformer(cfg.model, vocab_size=64)
        decay = resolve_decay(cfg, 10)
        opt = build_optimizer(model, cfg, decay)
        gen = torch.Generator().manual_seed(1)
        for step in range(4):
            if interrupted and step == 2:
                saved_model, saved_opt = model.state_dict(), opt.state_dict()
                model = Transformer(cfg.model, vocab_size=64)
                model.load_state_dict(saved_model)
                opt = build_optimizer(model, cfg, decay)
                opt.load_state_dict(saved_opt)
            set_step_hyperparams(opt, 1.0 - 0.1 * step, 1.0)
            batch = torch.randint(0, 64, (2, 9), generator=gen)
            logits = model(batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)
