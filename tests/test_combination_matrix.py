"""Every optimizer × regularizer × lr_schedule × wd_schedule either runs or is refused at compose time.

Composing is ~50-200 ms, so each group option is composed once (which range-checks it), and
the combinations are spliced together and checked with config.check_compatibility, the
cross-group table compose() runs after Hydra. For each distinct refusal the combination is also
composed for real, to prove compose() itself refuses it, with a message that names the valid
choices.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from omegaconf import DictConfig

from adrlab.config import ConfigError, check_compatibility, compose, conf_dir, validate
from adrlab.model import Transformer
from adrlab.optim import build_optimizer, group_hyperparams, resolve_decay, set_step_hyperparams
from adrlab.schedules import build_schedule

torch.set_num_threads(1)

TINY_MODEL = ["model.d_model=32", "model.n_layers=1", "model.d_ff=64", "model.n_heads=2", "model.head_dim=16"]
VOCAB, STEPS_PER_EPOCH, TOTAL_STEPS = 32, 5, 15


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


OPTIMIZERS, REGULARIZERS = options("optimizer"), options("regularizer")
LR_SCHEDULES, WD_SCHEDULES = options("lr_schedule"), options("wd_schedule")


def _overrides(opt: str, reg: str, lr: str = "constant", wd: str = "constant") -> list[str]:
    return [*TINY_MODEL, f"optimizer={opt}", f"regularizer={reg}", f"lr_schedule={lr}", f"wd_schedule={wd}"]


@functools.cache
def _base() -> DictConfig:
    return compose(TINY_MODEL)


@functools.cache
def _group_node(group: str, option: str) -> DictConfig:
    # With the other groups at their defaults every single option composes.
    return compose([f"{group}={option}"])[group]


def _splice(opt: str, reg: str, lr: str, wd: str) -> DictConfig | ConfigError:
    """The combination's config, or its refusal.

    One cached base with its four groups replaced in place (a deep copy per combination costs
    more than the 3 steps), so the config is valid until the next call.
    """
    cfg = _base()
    for group, option in (("optimizer", opt), ("regularizer", reg), ("lr_schedule", lr), ("wd_schedule", wd)):
        cfg[group] = _group_node(group, option)  # assignment copies the node
    # Each group was range-checked when it was composed; what is new here is the cross-group table.
    try:
        check_compatibility(cfg)
    except ConfigError as exc:
        return exc
    return cfg


_REFUSALS_COMPOSED: dict[str, str] = {}


def _compose_refuses(message: str, overrides: list[str]) -> None:
    """compose() itself refuses with the same message; composed once per distinct reason."""
    if message in _REFUSALS_COMPOSED:
        return
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    assert str(info.value) == message
    _REFUSALS_COMPOSED[message] = " ".join(overrides)


def _run_three_steps(cfg: DictConfig) -> None:
    torch.manual_seed(0)
    model = Transformer(cfg.model, vocab_size=VOCAB)
    decay = resolve_decay(cfg, STEPS_PER_EPOCH)
    optimizer = build_optimizer(model, cfg, decay)
    schedule = build_schedule(cfg, total_steps=TOTAL_STEPS, base_lr=float(cfg.optimizer.lr), decay=decay)
    gen = torch.Generator().manual_seed(1)
    for step in range(3):
        set_step_hyperparams(optimizer, schedule.lr_multiplier(step), schedule.wd_multiplier(step))
        batch = torch.randint(0, VOCAB, (2, 9), generator=gen)
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        assert math.isfinite(float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.collect_stats = step == 2
        optimizer.step()
    stats = optimizer.last_stats
    assert math.isfinite(stats["update_rms"]) and stats["update_rms"] > 0
    if cfg.optimizer.name in ("rmsuon", "ada_rmsuon"):
        assert math.isfinite(stats["energy_mean"]) and stats["energy_max"] >= stats["energy_mean"]
    hp = group_hyperparams(optimizer)
    assert all(math.isfinite(v) for v in hp.values())
    for p in model.parameters():
        assert torch.isfinite(p).all()


@pytest.mark.parametrize("wd", WD_SCHEDULES)
@pytest.mark.parametrize("lr", LR_SCHEDULES)
@pytest.mark.parametrize("reg", REGULARIZERS)
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_combination_runs_or_is_refused(opt: str, reg: str, lr: str, wd: str) -> None:
    cfg = _splice(opt, reg, lr, wd)
    if isinstance(cfg, ConfigError):
        message = str(cfg)
        assert any(word in message for word in ("choose", "pick", "use ")), message
        _compose_refuses(message, _overrides(opt, reg, lr, wd))
        return
    _run_three_steps(cfg)


def test_splicing_is_what_compose_gives() -> None:
    """The shortcut above is sound: a spliced config equals the composed one."""
    for opt, reg, lr, wd in [
        ("muon", "timescale", "ema_inv_sqrt", "follow_lr"),
        ("adamw", "l2", "wsd", "dynamic"),
        ("ada_rmsuon", "sqrt_v", "inv_sqrt", "constant"),
    ]:
        spliced = _splice(opt, reg, lr, wd)
        assert not isinstance(spliced, ConfigError)
        validate(spliced)
        assert spliced == compose(_overrides(opt, reg, lr, wd))


def test_the_matrix_refuses_what_the_design_says() -> None:
    refused = {
        (o, r, lr, wd)
        for o in OPTIMIZERS
        for r in REGULARIZERS
        for lr in LR_SCHEDULES
        for wd in WD_SCHEDULES
        if isinstance(_splice(o, r, lr, wd), ConfigError)
    }
    assert ("muon", "sqrt_v", "constant", "constant") in refused
    assert ("adamw", "none", "constant", "follow_lr") in refused
    assert ("rmsuon", "none", "ema_inverse", "constant") in refused
    assert ("rmsuon", "sqrt_v", "ema_inv_sqrt", "constant") in refused
    assert ("rmsuon", "sqrt_v", "constant", "constant") not in refused
    assert ("ada_rmsuon", "timescale", "ema_inverse", "dynamic") not in refused
    total = len(OPTIMIZERS) * len(REGULARIZERS) * len(LR_SCHEDULES) * len(WD_SCHEDULES)
    assert 0 < len(refused) < total
