"""Schedules against their closed forms (step 0 = first optimizer step)."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from adrlab.config import ConfigError, compose
from adrlab.optim import DecaySpec
from adrlab.schedules import Schedule, build_schedule, dynamic_transition, dynamic_wd

TOTAL = 1000
DECOUPLED = DecaySpec("decoupled", 0.1, "all")
STEPS = [0, 1, 10, 250, 500, 799, 800, 900, 999]


def _schedule(
    *overrides: str, total: int = TOTAL, base_lr: float = 3e-3, decay: DecaySpec = DECOUPLED
) -> Schedule:
    cfg = compose(list(overrides))
    return build_schedule(cfg, total_steps=total, base_lr=base_lr, decay=decay)


def _check(schedule: Schedule, closed_form, steps=STEPS) -> None:
    for s in steps:
        assert schedule.lr_multiplier(s) == pytest.approx(closed_form(s), rel=1e-12, abs=1e-15), s


def test_constant() -> None:
    _check(_schedule("lr_schedule=constant"), lambda s: 1.0)


def test_cosine_and_linear() -> None:
    _check(
        _schedule("lr_schedule=cosine", "lr_schedule.min_ratio=0.1"),
        lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / TOTAL)),
    )
    _check(_schedule("lr_schedule=linear", "lr_schedule.min_ratio=0.2"), lambda s: 1 - 0.8 * s / TOTAL)
    sched = _schedule("lr_schedule=cosine")
    assert sched.lr_multiplier(TOTAL) == pytest.approx(0.0, abs=1e-15)
    assert sched.lr_multiplier(TOTAL + 50) == pytest.approx(0.0, abs=1e-15)  # held at the floor


def test_wsd() -> None:
    sched = _schedule("lr_schedule=wsd", "lr_schedule.decay_fraction=0.2", "lr_schedule.min_ratio=0.0")
    _check(sched, lambda s: 1.0 if s < 800 else 1 - (s - 800) / 200)
    assert sched.lr_multiplier(799) == 1.0 and sched.lr_multiplier(900) == pytest.approx(0.5)


def test_inv_sqrt() -> None:
    _check(_schedule("lr_schedule=inv_sqrt", "lr_schedule.timescale=50"), lambda s: 1 / math.sqrt(1 + s / 50))


def test_ema_inverse_and_inv_sqrt_use_the_decay_lambda() -> None:
    eta, lam = 3e-3, 0.1
    _check(_schedule("lr_schedule=ema_inverse", base_lr=eta), lambda s: 1 / (lam * eta * s + 1))
    _check(_schedule("lr_schedule=ema_inv_sqrt", base_lr=eta), lambda s: 1 / math.sqrt(2 * lam * eta * s + 1))
    # An explicit lr_schedule.lam wins.
    _check(
        _schedule("lr_schedule=ema_inverse", "lr_schedule.lam=2.0", base_lr=eta),
        lambda s: 1 / (2.0 * eta * s + 1),
    )
    # Per-step units: λ_per_step/η_max is the equivalent lr-scaled λ.
    per_step = DecaySpec("per_step", 5.5e-3, "all")
    _check(
        _schedule("lr_schedule=ema_inv_sqrt", "regularizer=timescale", base_lr=1e-4, decay=per_step),
        lambda s: 1 / math.sqrt(2 * (5.5e-3 / 1e-4) * 1e-4 * s + 1),
    )


def test_ema_without_lambda_is_refused() -> None:
    cfg = compose(["lr_schedule=ema_inverse", "lr_schedule.lam=0.5"])
    OmegaConf.update(cfg, "lr_schedule.lam", None)
    with pytest.raises(ConfigError, match="needs λ > 0"):
        build_schedule(cfg, total_steps=10, base_lr=1e-3, decay=DecaySpec("none", 0.0, "all"))


def test_warmup_wraps_every_shape() -> None:
    sched = _schedule("lr_schedule=cosine", "lr_schedule.warmup_steps=10")
    for s in (0, 4, 9, 10, 500):
        cosine = 0.5 * (1 + math.cos(math.pi * s / TOTAL))
        assert sched.lr_multiplier(s) == pytest.approx(cosine * min(1.0, (s + 1) / 10))
    assert sched.lr_multiplier(0) == pytest.approx(0.1)
    sched = _schedule("lr_schedule=ema_inverse", "lr_schedule.warmup_steps=4")
    assert sched.lr_multiplier(1) == pytest.approx(0.5 / (0.1 * 3e-3 * 1 + 1))


def test_wd_constant() -> None:
    sched = _schedule("lr_schedule=cosine", "wd_schedule=constant")
    assert all(sched.wd_multiplier(s) == 1.0 for s in STEPS)


@pytest.mark.parametrize("lr_schedule", ["cosine", "ema_inv_sqrt", "wsd"])
def test_follow_lr_keeps_lambda_over_eta_constant(lr_schedule: str) -> None:
    sched = _schedule(f"lr_schedule={lr_schedule}", "wd_schedule=follow_lr", "lr_schedule.warmup_steps=5")
    eta_max, lam_max = 3e-3, 0.1
    for s in STEPS[:-1]:
        eta_t, lam_t = eta_max * sched.lr_multiplier(s), lam_max * sched.wd_multiplier(s)
        assert lam_t / eta_t == pytest.approx(lam_max / eta_max)


def seed_formula(
    step: int, T: int = 1000, factor: float = 0.7, floor: float = 0.1, cap: float = 2.0
) -> float:
    """Seed 004's compute_dynamic_weight_decay, as a multiplier."""
    if step <= T:
        return 1.0
    progress = min((step - T) / T, cap)
    return max(floor, factor**progress)


def test_dynamic_matches_the_seed_formula() -> None:
    sched = _schedule("wd_schedule=dynamic", total=10_000)
    for s in (0, 999, 1000, 1001, 1500, 2000, 2500, 3000, 5000, 7000, 10_000):
        assert sched.wd_multiplier(s) == pytest.approx(seed_formula(s)), s
    assert sched.wd_multiplier(1500) == pytest.approx(0.7**0.5)  # the seed's "84%"
    assert sched.wd_multiplier(3000) == pytest.approx(0.49)  # the seed's "49%"
    # The seed's milestone table says 24% at 5000 and 10% at 7000; its own formula caps progress
    # at 2, so both are max(0.1, 0.7**2) = 0.49. We implement the formula (the table assumes no cap).
    assert sched.wd_multiplier(5000) == pytest.approx(0.49)
    assert sched.wd_multiplier(7000) == pytest.approx(0.49)
    uncapped = _schedule("wd_schedule=dynamic", "wd_schedule.progress_cap=100", total=10_000)
    assert uncapped.wd_multiplier(5000) == pytest.approx(0.7**4)  # ≈ 0.24, the table's value
    assert uncapped.wd_multiplier(9000) == pytest.approx(0.1)  # floor


def test_dynamic_options_and_rescaling() -> None:
    sched = _schedule(
        "wd_schedule=dynamic",
        "wd_schedule.transition_steps=100",
        "wd_schedule.decay_factor=0.5",
        "wd_schedule.min_ratio=0.3",
        "wd_schedule.progress_cap=3.0",
    )
    for s in (50, 100, 150, 200, 300, 400, 900):
        assert sched.wd_multiplier(s) == pytest.approx(seed_formula(s, 100, 0.5, 0.3, 3.0)), s
    # transition_steps stated for a 10k-step run, rescaled to this 1k-step run: T = 100.
    rescaled = _schedule("wd_schedule=dynamic", "wd_schedule.reference_total_steps=10000")
    assert rescaled.wd_multiplier(100) == 1.0 and rescaled.wd_multiplier(200) == pytest.approx(0.7)
    assert dynamic_transition(1000, 7, 10_000) == 1  # never 0
    assert dynamic_wd(10, 0.7, 0.1, 2.0)(20) == pytest.approx(0.7)
