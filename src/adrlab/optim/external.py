"""Optimizers and regularizers from outside adrlab, with adrlab's decay applied around the step.

`build_run_optimizer` is what the training loop calls: built-in optimizer + built-in regularizer
go to `build_optimizer` unchanged; a `_target_` optimizer or a `_target_` regularizer is wrapped
in a `WrappedOptimizer`, whose `param_groups` are adrlab's bookkeeping groups (role, lr,
weight_decay, initial_lr, initial_weight_decay, decay_mode), so the schedules
(`set_step_hyperparams`) and the logged lr/wd (`group_hyperparams`) work on it as on a built-in.

Around each step, per group, with η = group lr and λ = group weight_decay (already scheduled):
  l2         g ← g + λθ                      before the step (the optimizer sees it)
  decoupled  θ ← θ(1 − ηλ)                   before the step (as torch.optim.AdamW orders it)
  per_step   θ ← θ(1 − λ)                    before the step (timescale, per-step units)
  sqrt_v     θ ← θ − ηλ·√v̂                   after the step; √v̂ from the optimizer's adrlab_sqrt_v
  custom     g ← g + λ·R.coupled(θ) before, θ ← θ − ηλ·R.decoupled(θ) after (λ = the wd multiplier)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer

from adrlab.config import ConfigError
from adrlab.extensions import (
    is_target,
    raise_no_sqrt_v,
    resolve_callable,
    resolve_optimizer,
)
from adrlab.optim.adamw import AdamW
from adrlab.optim.routing import DecaySpec, build_optimizer, route_parameters


class WrappedOptimizer:
    """One or two inner optimizers (the researcher's, and AdamW for the rest under
    routing=matrices) behind adrlab's bookkeeping groups, with decay applied around the step."""

    def __init__(self, inner: list[Optimizer], groups: list[dict[str, Any]], regularizer: Any = None) -> None:
        self.inner = inner
        self.param_groups = groups
        self.regularizer = regularizer
        self.collect_stats = False
        self.last_stats: dict[str, float] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.inner:
            opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            group["inner"]["lr"] = group["lr"]  # the schedule acts through the inner group's lr
            self._before(group)
        for opt in self.inner:
            if hasattr(opt, "collect_stats"):
                opt.collect_stats = self.collect_stats
            opt.step()
        for group in self.param_groups:
            self._after(group)
        if self.collect_stats:
            self.last_stats = self._stats()

    def _before(self, group: dict[str, Any]) -> None:
        mode, lam, lr = group["decay_mode"], group["weight_decay"], group["lr"]
        if lam == 0.0 or mode in ("none", "sqrt_v"):
            return
        for p in group["params"]:
            if mode == "l2" and p.grad is not None:
                p.grad.add_(p, alpha=lam)
            elif mode == "decoupled":
                p.mul_(1.0 - lr * lam)
            elif mode == "per_step":
                p.mul_(1.0 - lam)
            elif mode == "custom" and p.grad is not None and hasattr(self.regularizer, "coupled"):
                penalty = self.regularizer.coupled(p)
                if penalty is not None:
                    p.grad.add_(penalty, alpha=lam)

    def _after(self, group: dict[str, Any]) -> None:
        mode, lam, lr = group["decay_mode"], group["weight_decay"], group["lr"]
        if lam == 0.0 or mode not in ("sqrt_v", "custom"):
            return
        for p in group["params"]:
            if mode == "sqrt_v":
                p.add_(group["owner"].adrlab_sqrt_v(p), alpha=-lr * lam)
            elif hasattr(self.regularizer, "decoupled"):
                penalty = self.regularizer.decoupled(p)
                if penalty is not None:
                    p.add_(penalty, alpha=-lr * lam)

    def _stats(self) -> dict[str, float]:
        """Energy from built-in inner optimizers and the researcher's own `adrlab_stats()`;
        update RMS is measured by the training loop for every optimizer, so none is taken here."""
        stats: dict[str, float] = {}
        for opt in self.inner:
            stats.update({k: v for k, v in getattr(opt, "last_stats", {}).items() if k != "update_rms"})
            if hasattr(opt, "adrlab_stats"):
                stats.update({str(k): float(v) for k, v in opt.adrlab_stats().items()})
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"inner": [opt.state_dict() for opt in self.inner]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for opt, inner_state in zip(self.inner, state["inner"], strict=True):
            opt.load_state_dict(inner_state)


def _bookkeeping(
    inner_group: dict[str, Any], owner: Optimizer, role: str, lr: float, decay: DecaySpec, decays: bool
) -> dict[str, Any]:
    lam = float(decay.lam) if decay.active and decays else 0.0
    return {
        "params": list(inner_group["params"]),
        "role": role,
        "lr": lr,
        "initial_lr": lr,
        "weight_decay": lam,
        "initial_weight_decay": lam,
        "decay_mode": decay.mode if lam > 0 else "none",
        "inner": inner_group,
        "owner": owner,
    }


def _call_target(
    fn: Callable[..., Any], groups: list[dict[str, Any]], kwargs: dict[str, Any], target: str
) -> Optimizer:
    try:
        optimizer = fn(groups, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"optimizer._target_={target} refused its arguments: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(optimizer, Optimizer):
        raise ConfigError(
            f"optimizer._target_={target} returned {type(optimizer).__name__}, not a torch.optim.Optimizer"
        )
    if len(optimizer.param_groups) != len(groups) or any("lr" not in g for g in optimizer.param_groups):
        raise ConfigError(
            f"optimizer._target_={target} must keep the parameter groups it is given, each with an 'lr' "
            "(adrlab's schedules set param_group['lr'])"
        )
    return optimizer


def build_target_optimizer(model: nn.Module, cfg: DictConfig, decay: DecaySpec) -> WrappedOptimizer:
    """The researcher's optimizer on every parameter (routing=all) or on the hidden matrices with
    adrlab's AdamW on the rest (routing=matrices); decay by adrlab around the step."""
    opt = cfg.optimizer
    fn, kwargs = resolve_optimizer(cfg)
    target, routing, lr = str(opt["_target_"]), str(opt.get("routing", "all")), float(opt.lr)
    routed = {role: [p for _, p in members] for role, members in route_parameters(model, decay.scope).items()}
    mine = ["matrix", "adamw", "adamw_nodecay"] if routing == "all" else ["matrix"]
    mine = [role for role in mine if routed[role]]
    if not mine:
        raise ConfigError(f"optimizer.routing={routing}: the model has no parameters for {target}")
    user = _call_target(fn, [{"params": routed[role], "lr": lr} for role in mine], kwargs, target)
    if decay.mode == "sqrt_v" and not hasattr(user, "adrlab_sqrt_v"):
        raise_no_sqrt_v(target)
    groups = [
        _bookkeeping(g, user, role, lr, decay, role != "adamw_nodecay")
        for role, g in zip(mine, user.param_groups, strict=True)
    ]
    inner: list[Optimizer] = [user]
    rest = [role for role in ("adamw", "adamw_nodecay") if role not in mine and routed[role]]
    if rest:
        adamw, adamw_groups = _adamw_rest(opt, {role: routed[role] for role in rest}, decay)
        inner.append(adamw)
        groups += adamw_groups
    return WrappedOptimizer(inner, groups)


def _adamw_rest(
    opt: DictConfig, routed: dict[str, list[nn.Parameter]], decay: DecaySpec
) -> tuple[AdamW, list[dict[str, Any]]]:
    """routing=matrices: adrlab's AdamW on embeddings, head and 1-D parameters (adamw_* keys)."""
    lr = float(opt.get("adamw_lr") or opt.lr)
    adamw = AdamW(
        [{"params": params, "role": role} for role, params in routed.items()],
        lr=lr,
        betas=tuple(float(b) for b in (opt.get("adamw_betas") or (0.9, 0.999))),
        eps=float(opt.get("adamw_eps") or 1e-8),
        weight_decay=0.0,
        decay_mode="none",  # adrlab applies the decay around the step, as for the researcher's part
    )
    groups = [
        _bookkeeping(g, adamw, role, lr, decay, role != "adamw_nodecay")
        for role, g in zip(routed, adamw.param_groups, strict=True)
    ]
    return adamw, groups


def build_target_regularizer(cfg: DictConfig) -> Any:
    fn, kwargs = resolve_callable("regularizer", cfg, skip=0)
    target = str(cfg.regularizer["_target_"])
    try:
        regularizer = fn(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"regularizer._target_={target} refused its arguments: {exc}") from exc
    if not (hasattr(regularizer, "coupled") or hasattr(regularizer, "decoupled")):
        raise ConfigError(
            f"regularizer._target_={target} gave {type(regularizer).__name__}, which has neither "
            "coupled(param) nor decoupled(param) (see adrlab.extensions.Regularizer)"
        )
    return regularizer


def build_run_optimizer(model: nn.Module, cfg: DictConfig, decay: DecaySpec) -> Any:
    """The optimizer a run trains with: built-in, or wrapped when a `_target_` is involved."""
    if is_target(cfg.optimizer):
        wrapped = build_target_optimizer(model, cfg, decay)
    elif decay.mode == "custom":
        builtin = build_optimizer(model, cfg, DecaySpec("none", 0.0, decay.scope))
        groups = [
            _bookkeeping(g, builtin, g["role"], float(g["lr"]), decay, g["role"] != "adamw_nodecay")
            for g in builtin.param_groups
        ]
        wrapped = WrappedOptimizer([builtin], groups)
    else:
        return build_optimizer(model, cfg, decay)
    if decay.mode == "custom":
        wrapped.regularizer = build_target_regularizer(cfg)
    return wrapped
