"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), outside adrlab.

Per parameter, with gradient g, momentum m, lr η, decay λ:
    c = β1·m + (1 − β1)·g            # the interpolated momentum
    θ ← θ − η·(sign(c) + λ·θ)        # sign update, with Lion's own decoupled decay
    m ← β2·m + (1 − β2)·g

A plain torch.optim.Optimizer: adrlab knows nothing about it beyond the config that names it
(conf/optimizer/lion.yaml) and the optional stats hook below.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lion(Optimizer):
    # Extra per-step metrics adrlab logs (adrlab_stats) and `adrlab adr lint` accepts in criteria.
    adrlab_metric_names = ("lion_sign_flip",)

    def __init__(
        self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0
    ):
        if lr <= 0 or not all(0.0 <= b < 1.0 for b in betas) or weight_decay < 0:
            raise ValueError(
                f"Lion: need lr > 0, betas in [0, 1), weight_decay >= 0 (got {lr}, {betas}, {weight_decay})"
            )
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})
        self._flips = 0.0
        self._count = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        flips, count = 0.0, 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["last_sign"] = torch.zeros_like(p)
                m = state["exp_avg"]
                direction = torch.sign(m * beta1 + p.grad * (1.0 - beta1))
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(direction, alpha=-group["lr"])
                m.lerp_(p.grad, 1.0 - beta2)
                # Fraction of coordinates whose update sign flipped since the last step.
                flips += float((direction * state["last_sign"] < 0).sum())
                count += p.numel()
                state["last_sign"].copy_(direction)
        self._flips, self._count = flips, count
        return loss

    def adrlab_stats(self) -> dict[str, float]:
        return {"lion_sign_flip": self._flips / max(self._count, 1)}
