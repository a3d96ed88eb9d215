"""Per-step metrics the training loop measures itself, for any optimizer.

Update RMS is ‖θ_after − θ_before‖/√n over every trainable parameter, from a snapshot taken
before the step on logging steps only (decay included: it is part of what moved θ). It does not
depend on the optimizer reporting anything, so a torch.optim.SGD named by `_target_` gets the
same metric as adrlab's own optimizers (which measure the same ‖Δθ‖/√n inside their step, so
the loop takes theirs instead of cloning the parameters twice). lr and wd come from the bookkeeping groups
(`group_hyperparams`); energy and a researcher's `adrlab_stats()` from `optimizer.last_stats`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from adrlab.optim import RoutedOptimizer, group_hyperparams


def needs_snapshot(optimizer: Any) -> bool:
    """Whether the loop must measure update RMS itself (every optimizer but adrlab's own)."""
    return not isinstance(optimizer, RoutedOptimizer)


class UpdateMeter:
    """Snapshot before a logging step, ‖Δθ‖/√n after it."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]  # tied tensors once
        self.numel = sum(p.numel() for p in self.params)
        self._before: list[torch.Tensor] | None = None

    def snapshot(self) -> None:
        self._before = [p.detach().clone() for p in self.params]

    def update_rms(self) -> float:
        if self._before is None:
            raise RuntimeError("UpdateMeter.update_rms() needs a snapshot() before the step")
        squares = [(p.detach() - old).float().square().sum() for p, old in zip(self.params, self._before)]
        self._before = None
        return math.sqrt(float(torch.stack(squares).sum()) / max(self.numel, 1))


def loop_metrics(optimizer: Any, meter: UpdateMeter) -> dict[str, float]:
    """The optimizer-side point of a logging step: lr, wd (main group; AdamW's where it differs),
    the optimizer's own stats (energy, a researcher's hook) and the measured update RMS."""
    point = {**group_hyperparams(optimizer), **getattr(optimizer, "last_stats", {})}
    if needs_snapshot(optimizer):
        point["update_rms"] = meter.update_rms()
    return point
