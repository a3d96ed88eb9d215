"""AdamW, written out, and the base class every adrlab optimizer shares.

`RoutedOptimizer` owns what all optimizers here have in common: param groups that carry
`structured` (Muon-family update or AdamW), `decay_mode`, `initial_lr` and
`initial_weight_decay`; the AdamW update for non-structured groups; and the optional
statistics (`collect_stats` → `last_stats`) the training loop logs.

Decay modes (group["decay_mode"]; λ = group["weight_decay"], η = group["lr"]):
  none       nothing
  l2         coupled: λθ is added to the gradient before the moments
  decoupled  θ ← θ(1 − ηλ)                       (torch.optim.AdamW)
  per_step   θ ← θ(1 − λ)                        (ADR-0001 timescale, per-step units)
  sqrt_v     θ ← θ − ηλ√v̂, replacing decay       (ADR-0002 direct penalty)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

DECAY_MODES = ("none", "l2", "decoupled", "per_step", "sqrt_v")


def apply_multiplicative_decay_(param: Tensor, *, lr: float, weight_decay: float, mode: str) -> None:
    """The decay that shrinks θ toward 0 outside the update (decoupled and per_step modes)."""
    if weight_decay == 0.0:
        return
    if mode == "decoupled":
        param.mul_(1.0 - lr * weight_decay)
    elif mode == "per_step":
        param.mul_(1.0 - weight_decay)


def coupled_grad(grad: Tensor, param: Tensor, *, weight_decay: float, mode: str) -> Tensor:
    """The gradient the moments see: g + λθ for coupled l2, g otherwise (never modified in place)."""
    if mode == "l2" and weight_decay != 0.0:
        return grad.add(param, alpha=weight_decay)
    return grad


def adamw_update_(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decay_mode: str = "decoupled",
) -> None:
    """One AdamW step on one tensor, in place. `step` is the 1-based count after this update.

    Same arithmetic as torch.optim.AdamW's single-tensor path (bias corrections folded into the
    step size and the denominator, ε outside the square root), so the two agree to float rounding.
    """
    apply_multiplicative_decay_(param, lr=lr, weight_decay=weight_decay, mode=decay_mode)
    grad = coupled_grad(grad, param, weight_decay=weight_decay, mode=decay_mode)
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
    if decay_mode == "sqrt_v" and weight_decay != 0.0:
        # ADR-0002: the penalty's gradient is λ√v̂, applied with the same lr as the update.
        param.add_(exp_avg_sq.sqrt(), alpha=-lr * weight_decay / bias_correction2_sqrt)


class RoutedOptimizer(Optimizer):
    """Base class: AdamW for groups with structured=False, `_structured_step` for the rest."""

    #: decay modes a structured group of this optimizer accepts
    structured_decay_modes: tuple[str, ...] = DECAY_MODES

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        base = {
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "weight_decay": 0.0,
            "decay_mode": "decoupled",
            "structured": False,
            "role": "adamw",
        }
        base.update(defaults)
        super().__init__(params, base)
        self.collect_stats = False
        self.last_stats: dict[str, float] = {}
        self._energies: list[Tensor] = []

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("initial_lr", group["lr"])
        group.setdefault("initial_weight_decay", group["weight_decay"])
        self._check_group(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        mode = group["decay_mode"]
        if mode not in DECAY_MODES:
            raise ValueError(f"decay_mode={mode!r} is not valid; choose one of: {', '.join(DECAY_MODES)}")
        if group["lr"] < 0 or group["weight_decay"] < 0:
            raise ValueError(f"lr and weight_decay must be >= 0 (got {group['lr']}, {group['weight_decay']})")
        if group["structured"] and mode not in self.structured_decay_modes:
            raise ValueError(
                f"{type(self).__name__} cannot apply decay_mode={mode!r} to its structured (matrix) "
                f"update; choose one of: {', '.join(self.structured_decay_modes)}"
            )

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        collect = self.collect_stats
        self._energies = []
        sq_sum: Tensor | None = None
        numel = 0
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # Δθ measured directly (decay included), only on logging steps.
            before = [p.detach().clone() for p in params] if collect else None
            if group["structured"]:
                self._structured_step(group, params)
            else:
                self._adamw_step(group, params)
            if before is not None:
                for p, old in zip(params, before):
                    d = (p.detach() - old).float().square().sum()
                    sq_sum = d if sq_sum is None else sq_sum + d
                    numel += p.numel()
        if collect:
            stats: dict[str, float] = {}
            stats["update_rms"] = math.sqrt(float(sq_sum) / numel) if sq_sum is not None and numel else 0.0
            if self._energies:
                energies = torch.stack([e.float() for e in self._energies])
                stats["energy_mean"] = float(energies.mean())
                stats["energy_max"] = float(energies.max())
            self.last_stats = stats
        self._energies = []
        return loss

    def _adamw_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            adamw_update_(
                p,
                p.grad,
                state["exp_avg"],
                state["exp_avg_sq"],
                state["step"],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                decay_mode=group["decay_mode"],
            )

    def adrlab_sqrt_v(self, param: Tensor) -> Tensor:
        """√v̂ of a parameter after its last step (bias-corrected): lets adrlab apply
        regularizer=sqrt_v from outside (adrlab.optim.external), e.g. to the AdamW rest."""
        state = self.state[param]
        beta2 = next(g["betas"][1] for g in self.param_groups if any(p is param for p in g["params"]))
        return state["exp_avg_sq"].sqrt() / math.sqrt(1.0 - beta2 ** state["step"])

    def _structured_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        raise ValueError(f"{type(self).__name__} has no structured update; set structured=False")


class AdamW(RoutedOptimizer):
    """AdamW (Loshchilov & Hutter) with the decay modes above; equal to torch.optim.AdamW
    for decay_mode="decoupled" and to torch.optim.Adam(weight_decay=λ) for decay_mode="l2"."""

    structured_decay_modes = ()

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        decay_mode: str = "decoupled",
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "decay_mode": decay_mode,
            "structured": False,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        if group["structured"]:
            raise ValueError("AdamW has no structured update: every group needs structured=False")
        super()._check_group(group)
