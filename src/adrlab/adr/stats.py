"""Statistics for ADR criteria: per-run values of a metric series, then seed aggregation.

Per run, a criterion's statistic turns one metric series (x = epoch or global step) into a
number. Over seeds, the estimate and its 95% interval come from one closed-form method per
kind of statistic (below, and the table in adr/README.md): Student-t, paired by seed where
the seeds match. Closed forms keep a verdict deterministic without a resampling seed.

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

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special  # the two quantiles below; scipy.stats costs ~0.4 s more to import

from adrlab.adr.document import TIME_TO_TARGET_AXES, Statistic

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
        xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        keep = ~np.isnan(xs)
        xs, ys = xs[keep], ys[keep]
        # np.unique on the reversed points: sorted distinct x, each with its last logged value.
        xs, first = np.unique(xs[::-1], return_index=True)
        ys = ys[::-1][first]
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


# Statistics where a larger value is worse whatever the metric's mode (variability, rise, time).
ALWAYS_WORSE_HIGH: tuple[str, ...] = ("final_over_best", "cv", "max_spike", "time_to_target")


def diverged_value(name: str, mode: str, value: float) -> float:
    """A diverged run's per-run statistic: the worst value for every statistic, ``best``
    included (its pre-divergence best says nothing about a run that blew up).
    ``epoch_of_best`` has no worse direction and keeps its value."""
    if name == "epoch_of_best":
        return value
    return math.inf if name in ALWAYS_WORSE_HIGH else worst(mode)


TIME_AXES: tuple[str, ...] = TIME_TO_TARGET_AXES


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


def run_statistic(s: RunSeries, stat: Statistic, clock: np.ndarray | float | None = None) -> float:
    """Dispatch one (non-spread) statistic on one run's series; ``clock``: time_to_target's on
    the seconds and tokens axes (adrlab.adr.per_run derives it from the run)."""
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
    if name == "time_to_target":
        return time_to_target(s, p["target"], axis=p.get("axis", "epoch"), clock=clock)
    raise ValueError(f"statistic {name!r} is not a per-run statistic")


# --------------------------------------------------------------------------- seed aggregation
#
# One method per kind of statistic (adr/README.md has the table and the simulated coverage):
#   relation of two arms, seeds match   paired Student-t on the per-seed log-ratio (ratio)
#                                       or difference: seeds share initialisation and data order
#   relation, seeds do not match        Welch's unpaired t on log values (ratio) or values
#   one arm                             Student-t on the per-run values
#   spread over a swept parameter       simultaneous (Bonferroni) t-intervals of every swept
#                                       value's mean, combined by interval arithmetic
#   a non-finite value (diverged run)   no t: the interval is the range of the values (with
#                                       the infinite end), the estimate the mean (infinite)


def _mean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    # +inf and -inf together give NaN (undefined), which the interval logic reports.
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.mean(values, axis=axis)
    return float(out) if axis is None else out


def spread_of(means: np.ndarray, kind: str, axis: int = 0, mode: str = "min") -> np.ndarray | float:
    """Across the swept values' group means: max/min (``ratio``), max−min (``range``), or the
    best value over the sweep (``min`` / ``max``, the best by ``mode``: equal tuning budget)."""
    hi = np.max(means, axis=axis)
    lo = np.min(means, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "ratio":
            out = hi / lo
        elif kind == "range":
            out = hi - lo
        else:
            out = lo if mode == "min" else hi
    return float(out) if np.ndim(out) == 0 else out


def spread(groups: Mapping[object, Sequence[float]], kind: str = "ratio", mode: str = "min") -> float:
    """Spread across a swept parameter: the seed-mean per value, then max/min or max−min."""
    means = np.array([_mean(np.asarray(v, dtype=float)) for v in groups.values()])
    return float(spread_of(means, kind, mode=mode)) if means.size else math.nan


@dataclass(frozen=True)
class Interval:
    """Estimate and interval on the scale of the statistic (a ratio for ``relation: ratio``).

    ``sd`` and ``n``: the per-seed standard deviation on the analysis scale (log for ratios)
    and the seeds behind it, for the rough number of seeds that would decide; ``groups``: how
    many simultaneous intervals (Bonferroni) the method combined."""

    estimate: float
    low: float
    high: float
    method: str = ""
    sd: float = math.nan
    n: int = 0
    log: bool = False
    groups: int = 1

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.estimate) or math.isnan(self.low) or math.isnan(self.high))


@functools.lru_cache(maxsize=4096)
def t_quantile(confidence: float, df: float) -> float:
    """Two-sided Student-t critical value (memoised: seeds_needed asks for hundreds per interval)."""
    return float(special.stdtrit(df, 1.0 - (1.0 - confidence) / 2.0))  # scipy.stats.t.ppf's own core


def _analysis(values: Sequence[float] | np.ndarray, log: bool) -> np.ndarray:
    """Values on the analysis scale: log for ratios (a non-positive value becomes NaN)."""
    x = np.asarray(values, dtype=float)
    if not log:
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x >= 0, np.log(np.where(x >= 0, x, 1.0)), math.nan)


def _back(x: float, log: bool) -> float:
    with np.errstate(over="ignore"):
        return float(np.exp(x)) if log else float(x)


def _undefined(method: str) -> Interval:
    return Interval(
        math.nan,
        -math.inf,
        math.inf,
        method + "; undefined (e.g. inf − inf or a ratio of non-positive values)",
    )


def _range_rule(d: np.ndarray, log: bool, method: str) -> Interval:
    """Conservative rule for non-finite values: the mean (infinite) and the range of values."""
    if np.isnan(d).any() or (np.isposinf(d).any() and np.isneginf(d).any()):
        return _undefined(method)
    est = _mean(d)
    return Interval(
        _back(est, log),
        _back(float(d.min()), log),
        _back(float(d.max()), log),
        method + "; non-finite value: range of the values, no t",
        n=d.size,
        log=log,
    )


def _t_on(d: np.ndarray, log: bool, method: str, confidence: float) -> Interval:
    """Student-t interval of the mean of ``d`` (analysis scale), back-transformed."""
    if d.size == 0:
        return Interval(math.nan, math.nan, math.nan, method)
    if not np.isfinite(d).all():
        return _range_rule(d, log, method)
    mean = float(np.mean(d))
    if d.size < 2:
        return Interval(
            _back(mean, log),
            -math.inf if not log else 0.0,
            math.inf,
            method + "; one value: no interval",
            n=1,
            log=log,
        )
    sd = float(np.std(d, ddof=1))
    half = t_quantile(confidence, d.size - 1) * sd / math.sqrt(d.size)
    return Interval(
        _back(mean, log), _back(mean - half, log), _back(mean + half, log), method, sd, d.size, log
    )


def single_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """One arm: Student-t interval of the mean over its runs."""
    d = np.asarray(values, dtype=float)
    return _t_on(d, False, f"t over {d.size} runs", confidence)


def paired_interval(
    arm: Sequence[float], baseline: Sequence[float], relation: str, confidence: float = CONFIDENCE
) -> Interval:
    """Arm vs baseline, values aligned by seed: paired t on log-ratios (geometric-mean ratio)
    or on differences."""
    log = relation == "ratio"
    with np.errstate(invalid="ignore"):
        d = _analysis(arm, log) - _analysis(baseline, log)
    return _t_on(d, log, f"paired t over {d.size} matched seeds", confidence)


def welch_interval(
    arm: Sequence[float], baseline: Sequence[float], relation: str, confidence: float = CONFIDENCE
) -> Interval:
    """Arm vs baseline with unmatched seeds: Welch's unpaired t on log values (ratio) or values."""
    log = relation == "ratio"
    a, b = _analysis(arm, log), _analysis(baseline, log)
    method = f"Welch unpaired t (n={a.size}/{b.size})"
    if a.size == 0 or b.size == 0:
        return Interval(math.nan, math.nan, math.nan, method)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        with np.errstate(invalid="ignore"):
            ends = np.array([a.min() - b.max(), a.max() - b.min(), _mean(a) - _mean(b)])
        if np.isnan(ends).any():
            return _undefined(method)
        return Interval(
            _back(ends[2], log),
            _back(ends[0], log),
            _back(ends[1], log),
            method + "; non-finite value: range of the values, no t",
            log=log,
        )
    est = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Interval(
            _back(est, log),
            _back(-math.inf, log),
            math.inf,
            method + "; one run on a side: no interval",
            log=log,
        )
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else 1.0
    half = t_quantile(confidence, df) * se
    n = min(a.size, b.size)
    return Interval(
        _back(est, log), _back(est - half, log), _back(est + half, log), method, se * math.sqrt(n), n, log
    )


def _group_bounds(groups: Sequence[np.ndarray], confidence: float) -> np.ndarray:
    """(mean, low, high) per group, each a t-interval at ``confidence``."""
    out = []
    for g in groups:
        iv = _t_on(np.asarray(g, dtype=float), False, "", confidence)
        out.append((iv.estimate, iv.low, iv.high))
    return np.asarray(out, dtype=float).reshape(-1, 3)


def _spread_bounds(b: np.ndarray, kind: str, mode: str) -> tuple[float, float, float]:
    """Interval arithmetic: every group mean within [low, high] bounds the spread of the means."""
    means, lo, hi = b[:, 0], b[:, 1], b[:, 2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "ratio":
            low = np.max(lo) / np.min(hi)
            high = np.max(hi) / np.min(lo) if np.min(lo) > 0 else math.inf
        elif kind == "range":
            low, high = max(0.0, np.max(lo) - np.min(hi)), np.max(hi) - np.min(lo)
        elif mode == "min":
            low, high = np.min(lo), np.min(hi)
        else:
            low, high = np.max(lo), np.max(hi)
    return float(spread_of(means, kind, mode=mode)), float(low), float(high)


def spread_interval(
    arm: Sequence[Sequence[float]],
    kind: str,
    mode: str = "min",
    baseline: Sequence[Sequence[float]] | None = None,
    relation: str | None = None,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Spread over swept values (optionally related to another arm's spread): Bonferroni
    t-intervals over all swept values of both arms, combined by interval arithmetic (a max or
    min over values has no paired-t form); conservative by construction."""
    sides = [arm] if baseline is None else [arm, baseline]
    k = sum(len(s) for s in sides)
    method = f"simultaneous t over {k} swept values (Bonferroni)"
    if any(len(g) == 0 for s in sides for g in s) or k == 0:
        return Interval(math.nan, math.nan, math.nan, method)
    level = 1.0 - (1.0 - confidence) / k
    parts = [_spread_bounds(_group_bounds(s, level), kind, mode) for s in sides]
    sds = [np.std(g, ddof=1) for s in sides for g in s if len(g) > 1 and np.isfinite(g).all()]
    sd, n = (
        (float(np.sqrt(np.mean(np.square(sds)))), min(len(g) for s in sides for g in s))
        if sds
        else (math.nan, 0)
    )
    if baseline is None:
        est, low, high = parts[0]
    else:
        (ea, la, ha), (eb, lb, hb) = parts
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if relation == "ratio":
                est, low, high = ea / eb, la / hb, (ha / lb if lb > 0 else math.inf)
            else:
                est, low, high = ea - eb, la - hb, ha - lb
        sd = sd * math.sqrt(2) if not math.isnan(sd) else sd
    if any(math.isnan(float(v)) for v in (est, low, high)):
        return _undefined(method)
    return Interval(float(est), float(low), float(high), method, sd, n, False, k)


MAX_SEEDS_NEEDED = 100_000  # beyond this, seeds_needed says nothing


def seeds_needed(
    iv: Interval, threshold: float, confidence: float = CONFIDENCE, power: float = 0.8
) -> int | None:
    """Rough seeds per arm that would decide the criterion if the observed effect is real:
    the smallest n with (t + z_power) · sd / √n below |estimate − threshold| (analysis scale).
    None when it cannot be said (no spread estimate, or the estimate sits on the threshold)."""
    if not iv.defined or math.isnan(iv.sd) or iv.sd <= 0 or not math.isfinite(iv.estimate):
        return None
    if iv.log:
        if iv.estimate <= 0 or threshold <= 0:
            return None
        effect = abs(math.log(iv.estimate) - math.log(threshold))
    else:
        effect = abs(iv.estimate - threshold)
    if effect == 0:
        return None
    level = 1.0 - (1.0 - confidence) / iv.groups
    z = float(special.ndtri(power))  # the standard normal quantile (scipy.stats.norm.ppf's core)

    def decides(n: int) -> bool:
        return (t_quantile(level, n - 1) + z) * iv.sd / math.sqrt(n) < effect

    # Once n decides, every larger n does: where t + z > 0 the bound falls strictly with n (t
    # falls with the degrees of freedom, and each step shrinks 1/√n by far more than t's
    # rounding); where t + z <= 0 it is below any effect. So the smallest such n is found by
    # bisection: ~18 t quantiles instead of one per n (thousands for a small effect).
    if not decides(MAX_SEEDS_NEEDED):
        return None
    below, at = 1, MAX_SEEDS_NEEDED  # n = below does not decide (or is too few); n = at does
    while at - below > 1:
        mid = (below + at) // 2
        below, at = (below, mid) if decides(mid) else (mid, at)
    return at
