"""What a criterion takes from a run besides its metric series: the param its statistic is
measured relative to (``relative_to``) and the clock of ``time_to_target`` on the seconds and
tokens axes. Both come from the evidence table alone, so a verdict stays a pure function of the
criteria and the evidence (adr/README.md documents the rules; adrlab.adr.verdict applies them).

- relative_to PARAM: the run's statistic divided by the run's own PARAM, which must be finite
  and > 0 (a positive divisor keeps the metric's direction, so ``mode`` and the worst value of a
  diverged run are unchanged); a run without such a value is left out and named.
- seconds: the run's per-epoch ``epoch_time`` (training and that epoch's validation) summed up to
  the epoch of the hit. Per-epoch metrics only: no per-step wall clock is logged.
- tokens: ``derived.n_train_tokens`` (the train targets of one epoch, pads excluded) per epoch;
  a per-step metric spreads them evenly over the epoch's ``derived.steps_per_epoch`` steps, so
  its count is exact at every epoch end and within about one batch inside an epoch. A run whose
  epochs ``trainer.max_steps_per_epoch`` cut short sees fewer tokens than the split holds, which
  is not logged: it has no token clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from adrlab.adr.document import Criterion, Statistic

EPOCH_TIME = "epoch_time"
TRAIN_TOKENS = "derived.n_train_tokens"
STEPS_PER_EPOCH = "derived.steps_per_epoch"
STEP_CAP = "trainer.max_steps_per_epoch"
TOKEN_CLOCK_PARAMS: tuple[str, ...] = (TRAIN_TOKENS, STEPS_PER_EPOCH, STEP_CAP)


def inner_statistic(stat: Statistic) -> Statistic:
    """The per-run statistic: a spread's ``of``, any other statistic itself."""
    return stat.of if stat.name == "spread" and stat.of is not None else stat


def needed_params(criteria: Iterable[Criterion]) -> set[str]:
    """Params the criteria read from each run, for the evidence export: a spread's swept param,
    a ``relative_to`` param and the token clock's params."""
    out: set[str] = set()
    for c in criteria:
        inner = inner_statistic(c.statistic)
        if c.statistic.name == "spread":
            out.add(str(c.statistic.params["over"]))
        if inner.relative_to:
            out.add(inner.relative_to)
        if inner.name == "time_to_target" and inner.params.get("axis") == "tokens":
            out.update(TOKEN_CLOCK_PARAMS)
    return out


def numeric_params(evidence: pd.DataFrame, arm: str, key: str) -> dict[str, float]:
    """run_id -> the last numeric value of param ``key`` among ``arm``'s rows (a word is none)."""
    rows = evidence[(evidence["arm"] == arm) & (evidence["kind"] == "param") & (evidence["metric"] == key)]
    values = pd.to_numeric(rows["value"], errors="coerce")
    return {str(k): float(v) for k, v in values.groupby(rows["run_id"], sort=False).last().items()}


def divisors(evidence: pd.DataFrame, arm: str, key: str, run_ids: Iterable[str]) -> dict[str, float | str]:
    """run_id -> the run's value of param ``key`` to divide by, or why it has none usable."""
    values = numeric_params(evidence, arm, key)
    out: dict[str, float | str] = {}
    for run_id in run_ids:
        v = values.get(run_id, math.nan)
        if math.isnan(v):
            out[run_id] = f"has no numeric param {key} (relative_to)"
        elif not math.isfinite(v) or v <= 0:
            out[run_id] = f"has {key} = {v:g}; relative_to needs a finite value > 0"
        else:
            out[run_id] = v
    return out


@dataclass(frozen=True)
class Clock:
    """A run's clock for time_to_target: tokens per unit of the series' x, or the cumulative
    seconds at the end of each epoch (NaN from the first epoch without an epoch_time on)."""

    tokens_per_x: float = math.nan
    seconds: pd.Series | None = None
    problem: str = ""  # why the clock is unknown (for some hits, or all)

    @property
    def missing(self) -> bool:
        """No clock at all for the run: it is left out even when censored, as keeping only the
        runs that never reached the target would bias its arm towards slow."""
        if self.seconds is None:
            return math.isnan(self.tokens_per_x)
        return not bool(self.seconds.notna().any())

    def on(self, x: np.ndarray) -> np.ndarray | float:
        """The clock stats.time_to_target takes for a series at ``x``: tokens per x, or the
        seconds each point's interval took (their sum up to the hit is the cumulative time)."""
        if self.seconds is None:
            return self.tokens_per_x
        cumulative = self.seconds.reindex(x).to_numpy(dtype=float)
        return np.diff(cumulative, prepend=0.0)


def clocks(
    evidence: pd.DataFrame, arm: str, axis: str, epoch_metric: bool, run_ids: Iterable[str]
) -> dict[str, Clock]:
    """run_id -> its clock on ``axis`` (seconds or tokens); empty for the series' own axes."""
    if axis == "seconds":
        return _seconds_clocks(evidence, arm, list(run_ids))
    if axis == "tokens":
        return _token_clocks(evidence, arm, epoch_metric, list(run_ids))
    return {}


def _seconds_clocks(evidence: pd.DataFrame, arm: str, run_ids: list[str]) -> dict[str, Clock]:
    rows = evidence[
        (evidence["arm"] == arm) & (evidence["kind"] == "epoch") & (evidence["metric"] == EPOCH_TIME)
    ]
    frame = pd.DataFrame(
        {"run_id": rows["run_id"], "x": rows["x"], "t": pd.to_numeric(rows["value"], errors="coerce")}
    )
    by_run = dict(tuple(frame.groupby("run_id", sort=False)))
    out = {}
    for run_id in run_ids:
        own = by_run.get(run_id, frame.iloc[:0])
        per_epoch = own.groupby("x")["t"].last()  # an epoch logged twice (a resumed run): the last
        last = int(per_epoch.index.max()) if len(per_epoch) else 0
        per_epoch = per_epoch.reindex(np.arange(1, last + 1, dtype=float))
        usable = per_epoch.notna() & np.isfinite(per_epoch) & (per_epoch >= 0)
        cumulative = per_epoch.cumsum().where((~usable).cumsum() == 0)  # NaN from the first gap on
        gap = " (the seconds clock)" if cumulative.isna().all() else " for every epoch up to its hit"
        problem = f"has no {EPOCH_TIME}{gap}"
        out[run_id] = Clock(seconds=cumulative, problem=problem)
    return out


def _token_clocks(
    evidence: pd.DataFrame, arm: str, epoch_metric: bool, run_ids: list[str]
) -> dict[str, Clock]:
    tokens = numeric_params(evidence, arm, TRAIN_TOKENS)
    steps = numeric_params(evidence, arm, STEPS_PER_EPOCH)
    caps = numeric_params(evidence, arm, STEP_CAP)
    out = {}
    for run_id in run_ids:
        n, per_epoch, cap = (d.get(run_id, math.nan) for d in (tokens, steps, caps))
        if not (math.isfinite(n) and n > 0):
            out[run_id] = Clock(problem=f"has no {TRAIN_TOKENS} (tokens per epoch)")
        elif math.isfinite(cap) and not per_epoch < cap:
            out[run_id] = Clock(
                problem=f"has epochs cut short by {STEP_CAP}={cap:g}, whose tokens are not logged"
            )
        elif epoch_metric:
            out[run_id] = Clock(tokens_per_x=n)
        elif math.isfinite(per_epoch) and per_epoch > 0:
            out[run_id] = Clock(tokens_per_x=n / per_epoch)
        else:
            out[run_id] = Clock(problem=f"has no {STEPS_PER_EPOCH} to spread its tokens over steps")
    return out
