"""Statistics for ADR criteria: per-run values of a metric series, then seed aggregation.

Per run, a criterion's statistic turns one metric series (x = epoch or global step) into a
number. Over seeds, the estimate is the mean of the per-run values and the 95% interval a
percentile bootstrap that resamples runs within each arm (or swept-value group)
independently, with a fixed-seed numpy Generator so a verdict is deterministic.

Diverged runs are never dropped. A DIVERGED run logs per-epoch values only up to the
divergence; every later point of the grid the caller passes (adrlab.adr.verdict: every x any
run logged for the metric, plus the run's planned epochs), and any requested epoch or window
end past its last point, counts as the worst possible value: +inf when lower is better
(``mode: min``), -inf when higher is better (``mode: max``). NaN values (a NaN loss) count as
the worst value as well. Infinite values propagate: a mean with an inf is inf, a ratio or an
interval may be infinite; a variability statistic (cv, max_spike) over a window that holds a
non-finite value is +inf. A per-run value is NaN only when a *finished* run lacks the data
(e.g. no value at the requested epoch); the caller reports such runs instead of using them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from adrlab.adr.document import Statistic

N_RESAMPLES = 2000
BOOTSTRAP_SEED = 20251130
CONFIDENCE = 0.95
SPIKE_WINDOW = 20


def worst(mode: str) -> float:
    """The worst possible value of a metric: +inf when lower is better, -inf otherwise."""
    return math.inf if mode == "min" else -math.inf


@dataclass(frozen=True)
class RunSeries:
    """One run's series of one metric, sorted by x, NaN already replaced by the worst value."""

    x: np.ndarray
    y: np.ndarray
    mode: str = "min"
    diverged: bool = False

    @classmethod
    def from_points(
        cls,
        x: Sequence[float] | np.ndarray,
        y: Sequence[float] | np.ndarray,
        *,
        mode: str = "min",
        diverged: bool = False,
        grid: Sequence[float] | np.ndarray | None = None,
    ) -> RunSeries:
        """Build a series; for a diverged run, points of ``grid`` past its last x become worst.

        Duplicate x (a resumed run that logged a point twice) keep the last value.
        """
        frame = pd.DataFrame({"x": np.asarray(x, dtype=float), "y": np.asarray(y, dtype=float)})
        frame = frame.dropna(subset=["x"]).drop_duplicates("x", keep="last").sort_values("x", kind="stable")
        xs = frame["x"].to_numpy(dtype=float)
        ys = frame["y"].to_numpy(dtype=float)
        bad = worst(mode)
        ys = np.where(np.isnan(ys), bad, ys)
        if diverged and grid is not None:
            g = np.unique(np.asarray(grid, dtype=float))
            last = xs[-1] if xs.size else -math.inf
            tail = g[g > last]
            xs = np.concatenate([xs, tail])
            ys = np.concatenate([ys, np.full(tail.size, bad)])
        return cls(xs, ys, mode, diverged)

    @property
    def worst(self) -> float:
        return worst(self.mode)

    def window(self, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points with start <= x <= end (inclusive); a diverged run ending before ``end`` gets
        one worst point at ``end`` so the window cannot look better than the run was."""
        keep = np.ones(self.x.size, dtype=bool)
        if start is not None:
            keep &= self.x >= start
        if end is not None:
            keep &= self.x <= end
        xs, ys = self.x[keep], self.y[keep]
        last = self.x[-1] if self.x.size else -math.inf
        if self.diverged and end is not None and end > last:
            xs = np.append(xs, float(end))
            ys = np.append(ys, self.worst)
        return xs, ys


# --------------------------------------------------------------------------- per-run statistics


def value_at_epoch(s: RunSeries, epoch: float) -> float:
    hit = np.flatnonzero(s.x == epoch)
    if hit.size:
        return float(s.y[hit[-1]])
    if s.diverged and (s.x.size == 0 or epoch > s.x[-1]):
        return s.worst
    return math.nan


def mean_over_epochs(s: RunSeries, start: float, end: float) -> float:
    """Mean over epochs start..end inclusive."""
    _, ys = s.window(start, end)
    return _mean(ys) if ys.size else math.nan


def best(s: RunSeries) -> float:
    """Min for ``mode: min`` (losses, PPL), max for ``mode: max``."""
    if not s.y.size:
        return math.nan
    return float(np.min(s.y) if s.mode == "min" else np.max(s.y))


def final(s: RunSeries) -> float:
    return float(s.y[-1]) if s.y.size else math.nan


def final_over_best(s: RunSeries) -> float:
    """final / best; a run whose final value is the worst (diverged) stays the worst."""
    f, b = final(s), best(s)
    if math.isnan(f) or math.isnan(b):
        return math.nan
    if math.isinf(f):
        return f
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(f) / np.float64(b))


def epoch_of_best(s: RunSeries) -> float:
    """x of the first point reaching the best value."""
    if not s.y.size:
        return math.nan
    i = int(np.argmin(s.y) if s.mode == "min" else np.argmax(s.y))
    return float(s.x[i])


def slope(s: RunSeries, start: float | None = None, end: float | None = None) -> float:
    """Least-squares slope per unit of x over start..end (inclusive)."""
    xs, ys = s.window(start, end)
    if np.isposinf(ys).any() and np.isneginf(ys).any():
        return math.nan
    if np.isposinf(ys).any():
        return math.inf
    if np.isneginf(ys).any():
        return -math.inf
    if xs.size < 2 or np.ptp(xs) == 0:
        return math.nan
    dx = xs - xs.mean()
    return float(np.sum(dx * (ys - ys.mean())) / np.sum(dx * dx))


def cv(s: RunSeries, start: float | None = None, end: float | None = None) -> float:
    """Coefficient of variation std/mean (population std, ddof=0) over start..end."""
    _, ys = s.window(start, end)
    if ys.size < 2:
        return math.nan
    if not np.isfinite(ys).all():
        return math.inf
    mean = float(np.mean(ys))
    if mean == 0.0:
        return math.inf
    return float(np.std(ys) / mean)


def max_spike(
    s: RunSeries, window: int = SPIKE_WINDOW, start: float | None = None, end: float | None = None
) -> float:
    """max_t x_t / median(x_{t-w+1..t}) − 1: the largest jump above the trailing rolling median
    (the window includes the current point and is shorter at the start)."""
    _, ys = s.window(start, end)
    if not ys.size:
        return math.nan
    if not np.isfinite(ys).all():
        return math.inf
    med = pd.Series(ys).rolling(window, min_periods=1).median().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ys / med - 1.0
    ratio = np.where(np.isnan(ratio), math.inf, ratio)  # 0/0 around a zero median: unbounded
    return float(np.max(ratio))


TIME_AXES: tuple[str, ...] = ("epoch", "step", "seconds", "tokens")


def time_to_target(
    s: RunSeries, target: float, *, axis: str = "epoch", clock: Sequence[float] | float | None = None
) -> float:
    """The first point at which the metric reaches `target` (≤ for a lower-is-better metric,
    ≥ otherwise), as AlgoPerf scores optimizers; +inf (censored) when the run never does.

    axis "epoch" or "step": the series' own x (epoch metrics are logged per epoch, step
    metrics per step). "seconds": `clock` lists the wall clock of each point's interval
    (e.g. the epoch_time of epochs 1..n) and the result is their sum up to the hit. "tokens":
    `clock` is tokens per unit of x (per step), so the result is x·clock. Always lower is
    better, whatever the metric's own direction."""
    if axis not in TIME_AXES:
        raise ValueError(f"time_to_target axis {axis!r} is not valid; choose one of: {', '.join(TIME_AXES)}")
    reached = s.y <= target if s.mode == "min" else s.y >= target
    hits = np.flatnonzero(reached & np.isfinite(s.y))
    if hits.size == 0:
        return math.inf
    first = int(hits[0])
    if axis in ("epoch", "step"):
        return float(s.x[first])
    if clock is None:
        raise ValueError(
            f"time_to_target on axis {axis!r} needs its clock (seconds per point or tokens per x)"
        )
    if axis == "tokens":
        return float(s.x[first]) * float(clock)  # type: ignore[arg-type]
    seconds = np.asarray(clock, dtype=float)
    if seconds.size < first + 1:
        raise ValueError(f"time_to_target: {seconds.size} clock values for a hit at point {first + 1}")
    return float(np.sum(seconds[: first + 1]))


def run_statistic(s: RunSeries, stat: Statistic) -> float:
    """Dispatch one (non-spread) statistic on one run's series."""
    p = stat.params
    name = stat.name
    if name == "value_at_epoch":
        return value_at_epoch(s, p["epoch"])
    if name == "mean_over_epochs":
        return mean_over_epochs(s, p["start"], p["end"])
    if name == "best":
        return best(s)
    if name == "final":
        return final(s)
    if name == "final_over_best":
        return final_over_best(s)
    if name == "epoch_of_best":
        return epoch_of_best(s)
    if name == "slope":
        return slope(s, p.get("start"), p.get("end"))
    if name == "cv":
        return cv(s, p.get("start"), p.get("end"))
    if name == "max_spike":
        return max_spike(s, p.get("window", SPIKE_WINDOW), p.get("start"), p.get("end"))
    if name == "time_to_target":  # on the series' own axis (epoch or step); see time_to_target
        return time_to_target(s, p["target"], axis=p.get("axis", "epoch"))
    raise ValueError(f"statistic {name!r} is not a per-run statistic")


# --------------------------------------------------------------------------- seed aggregation


def _mean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    # +inf and -inf together give NaN (undefined), which the interval logic reports.
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.mean(values, axis=axis)
    return float(out) if axis is None else out


def spread_of(means: np.ndarray, kind: str, axis: int = 0) -> np.ndarray | float:
    """Across the swept values' group means: max/min (``ratio``), max−min (``range``), or the
    best value over the sweep (``min`` / ``max``: a comparison at equal tuning budget)."""
    hi = np.max(means, axis=axis)
    lo = np.min(means, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "ratio":
            out = hi / lo
        elif kind == "range":
            out = hi - lo
        else:
            out = lo if kind == "min" else hi
    return float(out) if np.ndim(out) == 0 else out


def spread(groups: Mapping[object, Sequence[float]], kind: str = "ratio") -> float:
    """Spread across a swept parameter: the seed-mean per value, then max/min or max−min."""
    means = np.array([_mean(np.asarray(v, dtype=float)) for v in groups.values()])
    return float(spread_of(means, kind)) if means.size else math.nan


@dataclass(frozen=True)
class Side:
    """One arm's per-run values: a single group (plain statistic) or one group per swept
    value (spread, ``kind`` ratio|range). Groups are resampled independently."""

    groups: tuple[np.ndarray, ...]
    kind: str | None = None

    @classmethod
    def plain(cls, values: Sequence[float]) -> Side:
        return cls((np.asarray(values, dtype=float),))

    @classmethod
    def spread(cls, groups: Sequence[Sequence[float]], kind: str) -> Side:
        return cls(tuple(np.asarray(g, dtype=float) for g in groups), kind)

    def reduce(self, means: list[np.ndarray]) -> np.ndarray:
        if self.kind is None:
            return means[0]
        return np.asarray(spread_of(np.stack(means), self.kind, axis=0))


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def relate(a: np.ndarray, b: np.ndarray, relation: str) -> np.ndarray:
    """arm/baseline (ratio) or arm − baseline (difference), inf-safe."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.asarray(a / b if relation == "ratio" else a - b)


def bootstrap_interval(
    arm: Side,
    baseline: Side | None = None,
    relation: str | None = None,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Point estimate and percentile-bootstrap interval of a side (or a relation of two).

    Each group of runs is resampled with replacement independently, the resampled means
    are reduced per side, then related. If any resample is undefined (NaN, e.g. inf/inf),
    the interval is unbounded on both sides rather than silently shortened.
    """
    sides = [arm] if baseline is None else [arm, baseline]
    if any(g.size == 0 for side in sides for g in side.groups):
        return Interval(math.nan, math.nan, math.nan)

    def combine(per_side: list[np.ndarray]) -> np.ndarray:
        return per_side[0] if baseline is None else relate(per_side[0], per_side[1], str(relation))

    point = combine([side.reduce([np.asarray(_mean(g)) for g in side.groups]) for side in sides])
    rng = np.random.default_rng(seed)
    resampled = []
    for side in sides:
        means = []
        for g in side.groups:
            idx = rng.integers(0, g.size, size=(n_resamples, g.size))
            means.append(_mean(g[idx], axis=1))
        resampled.append(side.reduce(means))
    dist = combine(resampled)
    estimate = float(point)
    if np.isnan(dist).any():
        return Interval(estimate, -math.inf, math.inf)
    ordered = np.sort(dist)
    alpha = 1.0 - confidence
    # Index the sorted draws directly: interpolating between two infinities would give NaN.
    lo = ordered[math.floor(alpha / 2 * (n_resamples - 1))]
    hi = ordered[math.ceil((1 - alpha / 2) * (n_resamples - 1))]
    return Interval(estimate, float(lo), float(hi))


def mean_interval(
    values: Sequence[float], *, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> Interval:
    """Shortcut: seed mean and bootstrap interval of one arm's per-run values."""
    return bootstrap_interval(Side.plain(values), n_resamples=n_resamples, seed=seed)
