"""Learning-rate and weight-decay schedules as multipliers of the base values.

step = 0 is the first optimizer step. The loop sets, before each step,
    lr_t = lr_base · lr_multiplier(step)      λ_t = λ_max · wd_multiplier(step)
(see adrlab.optim.set_step_hyperparams). Every lr shape is wrapped by a linear warmup:
multiplier · min(1, (step + 1)/warmup_steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from omegaconf import DictConfig

from adrlab.config import ConfigError
from adrlab.extensions import is_target, resolve_callable
from adrlab.optim.routing import DecaySpec

Multiplier = Callable[[int], float]


class Schedule:
    """lr and wd multipliers per step; the names are kept for repr and logging."""

    def __init__(self, lr_fn: Multiplier, wd_fn: Multiplier, *, lr_name: str = "", wd_name: str = "") -> None:
        self._lr_fn = lr_fn
        self._wd_fn = wd_fn
        self.lr_name = lr_name
        self.wd_name = wd_name

    def lr_multiplier(self, step: int) -> float:
        return float(self._lr_fn(step))

    def wd_multiplier(self, step: int) -> float:
        return float(self._wd_fn(step))

    def __repr__(self) -> str:
        return f"Schedule(lr={self.lr_name}, wd={self.wd_name})"


# --------------------------------------------------------------------------- lr shapes


def constant_lr() -> Multiplier:
    return lambda step: 1.0


def cosine_lr(total_steps: int, min_ratio: float) -> Multiplier:
    """Half cosine from 1 at step 0 to min_ratio at step total_steps (held after)."""
    total = max(1, total_steps)

    def fn(step: int) -> float:
        progress = min(1.0, step / total)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def linear_lr(total_steps: int, min_ratio: float) -> Multiplier:
    """Straight line from 1 at step 0 to min_ratio at step total_steps (held after)."""
    total = max(1, total_steps)
    return lambda step: 1.0 - (1.0 - min_ratio) * min(1.0, step / total)


def wsd_lr(total_steps: int, min_ratio: float, decay_fraction: float) -> Multiplier:
    """Warmup–stable–decay: 1 until the last decay_fraction of the run, then linear to min_ratio."""
    decay_steps = max(1, round(decay_fraction * total_steps))
    start = max(0, total_steps - decay_steps)

    def fn(step: int) -> float:
        if step < start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * min(1.0, (step - start) / decay_steps)

    return fn


def inv_sqrt_lr(timescale: float) -> Multiplier:
    """η_s/η_max = 1/√(1 + s/timescale)."""
    return lambda step: 1.0 / math.sqrt(1.0 + step / timescale)


def ema_inverse_lr(lam: float, eta_max: float) -> Multiplier:
    """Seed 002, optimal for constant λ: η_s/η_max = 1/(λ·η_max·s + 1)."""
    return lambda step: 1.0 / (lam * eta_max * step + 1.0)


def ema_inv_sqrt_lr(lam_max: float, eta_max: float) -> Multiplier:
    """Seed 002, optimal when λ_s ∝ η_s: η_s/η_max = 1/√(2·λ_max·η_max·s + 1)."""
    return lambda step: 1.0 / math.sqrt(2.0 * lam_max * eta_max * step + 1.0)


def with_warmup(fn: Multiplier, warmup_steps: int) -> Multiplier:
    if warmup_steps <= 0:
        return fn
    return lambda step: fn(step) * min(1.0, (step + 1) / warmup_steps)


def ema_lambda(cfg: DictConfig, base_lr: float, decay: DecaySpec) -> float:
    """λ for the ema schedules, in lr-scaled units (θ ← θ(1 − ηλ)).

    lr_schedule.lam if set; else the run's λ, with per-step units converted as λ/η_max.
    """
    lam = cfg.lr_schedule.get("lam")
    if lam is not None:
        return float(lam)
    if decay.mode in ("decoupled", "l2") and decay.lam > 0:
        return float(decay.lam)
    if decay.mode == "per_step" and decay.lam > 0:
        return float(decay.lam) / base_lr
    raise ConfigError(
        f"lr_schedule={cfg.lr_schedule.name} needs λ > 0: set lr_schedule.lam, or use "
        "regularizer in {decoupled, l2, timescale} with weight_decay > 0"
    )


def target_multiplier(group: str, cfg: DictConfig, total_steps: int) -> Multiplier:
    """A researcher's schedule (adrlab.extensions): f(step, total_steps, **params) -> multiplier."""
    fn, params = resolve_callable(group, cfg, skip=2)
    target = cfg[group]["_target_"]
    try:
        first = float(fn(0, total_steps, **params))
    except Exception as exc:
        raise ConfigError(f"{group}._target_={target} failed at step 0: {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(first) or first < 0:
        raise ConfigError(
            f"{group}._target_={target} returned {first} at step 0; a multiplier is a number >= 0"
        )
    return lambda step: fn(step, total_steps, **params)


def build_lr_multiplier(cfg: DictConfig, *, total_steps: int, base_lr: float, decay: DecaySpec) -> Multiplier:
    sched = cfg.lr_schedule
    name = sched.name
    if is_target(sched):
        fn = target_multiplier("lr_schedule", cfg, total_steps)
    elif name == "constant":
        fn = constant_lr()
    elif name == "cosine":
        fn = cosine_lr(total_steps, float(sched.min_ratio))
    elif name == "linear":
        fn = linear_lr(total_steps, float(sched.min_ratio))
    elif name == "wsd":
        fn = wsd_lr(total_steps, float(sched.min_ratio), float(sched.decay_fraction))
    elif name == "inv_sqrt":
        fn = inv_sqrt_lr(float(sched.timescale))
    elif name == "ema_inverse":
        fn = ema_inverse_lr(ema_lambda(cfg, base_lr, decay), base_lr)
    elif name == "ema_inv_sqrt":
        fn = ema_inv_sqrt_lr(ema_lambda(cfg, base_lr, decay), base_lr)
    else:
        raise ConfigError(
            f"lr_schedule={name!r} is not known; choose one of: constant, cosine, linear, wsd, "
            "inv_sqrt, ema_inverse, ema_inv_sqrt"
        )
    return with_warmup(fn, int(sched.get("warmup_steps", 0)))


# --------------------------------------------------------------------------- wd shapes


def dynamic_transition(transition_steps: int, total_steps: int, reference_total_steps: int | None) -> int:
    """T of the dynamic schedule; rescaled to this run's length when a reference length is given."""
    if reference_total_steps is None:
        return transition_steps
    return max(1, round(transition_steps * total_steps / reference_total_steps))


def dynamic_wd(transition: int, decay_factor: float, min_ratio: float, progress_cap: float) -> Multiplier:
    """Seed 004's formula: 1 up to T, then max(min_ratio, decay_factor^min((s − T)/T, cap)).

    With the defaults (T=1000, 0.7, 0.1, cap 2) the multiplier bottoms out at 0.7² = 0.49 from
    step 3000 on; the seed's milestone table (24% at 5000, 10% at 7000) assumes no cap.
    """

    def fn(step: int) -> float:
        if step <= transition:
            return 1.0
        progress = min((step - transition) / transition, progress_cap)
        return max(min_ratio, decay_factor**progress)

    return fn


def build_wd_multiplier(cfg: DictConfig, *, total_steps: int, lr_fn: Multiplier) -> Multiplier:
    sched = cfg.wd_schedule
    name = sched.name
    if is_target(sched):
        return target_multiplier("wd_schedule", cfg, total_steps)
    if name == "constant":
        return lambda step: 1.0
    if name == "follow_lr":
        return lr_fn  # λ_t/λ_max = η_t/η_max
    if name == "dynamic":
        transition = dynamic_transition(
            int(sched.transition_steps), total_steps, sched.get("reference_total_steps")
        )
        return dynamic_wd(
            transition, float(sched.decay_factor), float(sched.min_ratio), float(sched.progress_cap)
        )
    raise ConfigError(f"wd_schedule={name!r} is not known; choose one of: constant, follow_lr, dynamic")


def build_schedule(cfg: DictConfig, *, total_steps: int, base_lr: float, decay: DecaySpec) -> Schedule:
    lr_fn = build_lr_multiplier(cfg, total_steps=total_steps, base_lr=base_lr, decay=decay)
    wd_fn = build_wd_multiplier(cfg, total_steps=total_steps, lr_fn=lr_fn)
    return Schedule(lr_fn, wd_fn, lr_name=str(cfg.lr_schedule.name), wd_name=str(cfg.wd_schedule.name))
