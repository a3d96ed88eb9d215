"""What a run costs, next to what it buys: FLOPs derived at build time, the optimizer step's
share of the step, wall clock and peak memory per epoch.

FLOPs (multiply-adds count 2):
- the model's training step: flops_per_token × tokens per step (forward + backward ≈ 3 × forward);
- the structured update's Newton–Schulz: per iteration on an m × n matrix (m ≤ n after the
  transpose NS takes): A = XXᵀ (2m²n), B = bA + cA² (2m³), X ← aX + BX (2m²n), so
  ns_steps · (4m²n + 2m³) per matrix per optimizer step. With T iterations, m ≈ n = d and B·L
  tokens a step that is ≈ T·m/(B·L)·3 of the matrix's own forward + backward (6·m·n per token).

Timing is taken on logging steps only (every log_every): on a GPU each timed step needs a
synchronise, and one every log_every steps costs what the statistics cost anyway.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def ns_flops_per_step(model: torch.nn.Module, ns_steps: int) -> float:
    """Newton–Schulz FLOPs of one optimizer step over the model's hidden matrices."""
    roles = model.param_roles()  # type: ignore[operator]
    total = 0.0
    for name, p in model.named_parameters():
        if roles[name] != "matrix":
            continue
        rows, cols = p.shape[0], p[0].numel()
        m, n = min(rows, cols), max(rows, cols)
        total += ns_steps * (4.0 * m * m * n + 2.0 * m**3)
    return total


def cost_params(model: torch.nn.Module, cfg: Any) -> dict[str, float]:
    """derived.* cost params logged once with every run (zero NS FLOPs for AdamW)."""
    tokens = int(cfg.trainer.batch_size) * int(cfg.data.seq_len)
    model_flops = float(model.flops_per_token(int(cfg.data.seq_len))) * tokens  # type: ignore[operator]
    # Only the built-in Muon family runs Newton–Schulz; a `_target_` optimizer's own work is not known.
    ns_steps = cfg.optimizer.get("ns_steps") if "_target_" not in cfg.optimizer else None
    ns = ns_flops_per_step(model, int(ns_steps)) if ns_steps is not None else 0.0
    return {
        "model_flops_per_step": model_flops,
        "ns_flops_per_step": ns,
        "ns_flops_ratio": ns / model_flops if model_flops else 0.0,
    }


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on a GPU; the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class CostMeter:
    """Accumulates, over one epoch's timed steps, the whole step and the optimizer step inside it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step_seconds = 0.0
        self.optimizer_seconds = 0.0
        self.timed_steps = 0
        self._step_start: float | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def begin_step(self, timed: bool) -> None:
        self._step_start = self._now() if timed else None

    @contextmanager
    def optimizer_step(self) -> Iterator[None]:
        """Wrap optimizer.step(); closes the step timed by begin_step (if it was)."""
        if self._step_start is None:
            yield
            return
        before = self._now()
        yield
        after = self._now()
        self.optimizer_seconds += after - before
        self.step_seconds += after - self._step_start
        self.timed_steps += 1
        self._step_start = None

    def epoch_metrics(self) -> dict[str, float]:
        """Per-epoch cost metrics; the accumulators start again for the next epoch."""
        out = {"peak_memory_mb": peak_memory_mb(self.device)}
        if self.timed_steps:
            out["step_time_ms"] = 1e3 * self.step_seconds / self.timed_steps
            out["optimizer_step_share"] = self.optimizer_seconds / max(self.step_seconds, 1e-12)
        self.step_seconds, self.optimizer_seconds, self.timed_steps = 0.0, 0.0, 0
        return out
