"""Per-run statistics and seed aggregation against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from adrlab.adr import stats
from adrlab.adr.document import Statistic
from adrlab.adr.stats import RunSeries

EPOCHS = [1, 2, 3, 4, 5]
PPL = [10.0, 8.0, 6.0, 7.0, 9.0]


def series(values: list[float] = PPL, x: list[float] | None = None, **kw: object) -> RunSeries:
    return RunSeries.from_points(x or list(range(1, len(values) + 1)), values, **kw)  # type: ignore[arg-type]


def test_epoch_statistics_min_mode() -> None:
    s = series()
    assert stats.value_at_epoch(s, 2) == 8.0
    assert math.isnan(stats.value_at_epoch(s, 9))  # a finished run that lacks the epoch
    assert stats.mean_over_epochs(s, 2, 4) == pytest.approx(7.0)  # (8 + 6 + 7) / 3
    assert stats.best(s) == 6.0
    assert stats.final(s) == 9.0
    assert stats.final_over_best(s) == pytest.approx(1.5)
    assert stats.epoch_of_best(s) == 3.0
    # x = 1..5 (mean 3), y mean 8: sum(dx*dy) = -4 + 0 + 0 - 1 + 2 = -3, sum(dx^2) = 10
    assert stats.slope(s) == pytest.approx(-0.3)
    assert stats.slope(s, 1, 3) == pytest.approx(-2.0)
    assert stats.slope(s, 3, 5) == pytest.approx(1.5)


def test_epoch_statistics_max_mode() -> None:
    s = series(mode="max")
    assert stats.best(s) == 10.0
    assert stats.epoch_of_best(s) == 1.0
    assert stats.final_over_best(s) == pytest.approx(0.9)


def test_unsorted_and_duplicate_points() -> None:
    s = RunSeries.from_points([3, 1, 2, 3], [6.0, 10.0, 8.0, 5.0])
    assert list(s.x) == [1.0, 2.0, 3.0]
    assert list(s.y) == [10.0, 8.0, 5.0]  # a resumed run's repeated epoch keeps the last value


def test_cv_and_window() -> None:
    s = series([1.0, 2.0, 3.0, 4.0], x=[10, 20, 30, 40])
    # mean 2.5, population std sqrt(1.25)
    assert stats.cv(s) == pytest.approx(math.sqrt(1.25) / 2.5)
    # steps 20..40: [2, 3, 4], mean 3, std sqrt(2/3)
    assert stats.cv(s, 20, 40) == pytest.approx(math.sqrt(2 / 3) / 3)
    assert math.isnan(stats.cv(s, 40, 40))


def test_max_spike() -> None:
    s = series([1.0, 1.0, 1.0, 5.0, 1.0])
    # trailing medians (window 3, current point included): 1, 1, 1, 1, 1 -> spike 5/1 - 1
    assert stats.max_spike(s, window=3) == pytest.approx(4.0)
    assert stats.max_spike(s) == pytest.approx(4.0)  # default window 20
    # [2, 4]: medians 2, 3 -> 0 and 4/3 - 1
    assert stats.max_spike(series([2.0, 4.0])) == pytest.approx(1 / 3)
    # window restricted to the steady part
    assert stats.max_spike(s, window=3, start=1, end=3) == 0.0
    # decreasing losses have no spike above the median
    assert stats.max_spike(series([5.0, 4.0, 3.0])) == 0.0


def test_run_statistic_dispatch() -> None:
    s = series()
    assert stats.run_statistic(s, Statistic("final")) == 9.0
    assert stats.run_statistic(s, Statistic("value_at_epoch", {"epoch": 3})) == 6.0
    assert stats.run_statistic(s, Statistic("mean_over_epochs", {"start": 1, "end": 2})) == 9.0
    assert stats.run_statistic(s, Statistic("slope", {"start": 1, "end": 3})) == pytest.approx(-2.0)
    assert stats.run_statistic(s, Statistic("max_spike", {"window": 2})) == pytest.approx(
        9 / 8 - 1
    )  # medians 10, 9, 7, 6.5, 8
    with pytest.raises(ValueError):
        stats.run_statistic(s, Statistic("spread", {"over": "a", "kind": "ratio"}, Statistic("best")))


def test_diverged_run_counts_as_worst() -> None:
    # Diverged after epoch 2 of 5: later epochs are +inf for mode min.
    s = RunSeries.from_points([1, 2], [10.0, 8.0], diverged=True, grid=EPOCHS)
    assert list(s.x) == [1, 2, 3, 4, 5]
    assert stats.final(s) == math.inf
    assert stats.final_over_best(s) == math.inf
    assert stats.best(s) == 8.0  # as logged; the verdict then counts the diverged run as worst
    assert stats.value_at_epoch(s, 2) == 8.0
    assert stats.value_at_epoch(s, 4) == math.inf
    assert stats.value_at_epoch(s, 12) == math.inf  # beyond the grid, still worst
    assert stats.mean_over_epochs(s, 1, 2) == pytest.approx(9.0)
    assert stats.mean_over_epochs(s, 1, 3) == math.inf
    assert stats.slope(s) == math.inf
    m = RunSeries.from_points([1, 2], [0.5, 0.6], mode="max", diverged=True, grid=EPOCHS)
    assert stats.final(m) == -math.inf
    assert stats.final_over_best(m) == -math.inf
    assert stats.slope(m) == -math.inf


def test_diverged_step_series_and_nan_values() -> None:
    s = RunSeries.from_points([10, 20, 30], [1.0, 2.0, float("nan")], diverged=True)
    assert s.y[-1] == math.inf  # a NaN loss is the worst value
    assert stats.cv(s) == math.inf
    assert stats.max_spike(s) == math.inf
    # a step window ending after the divergence also counts the missing tail as worst
    t = RunSeries.from_points([10, 20], [1.0, 2.0], diverged=True)
    assert stats.cv(t, 10, 100) == math.inf
    assert stats.cv(t, 10, 20) == pytest.approx(0.5 / 1.5)


def test_diverged_before_first_value() -> None:
    s = RunSeries.from_points([], [], diverged=True, grid=EPOCHS)
    assert stats.final(s) == math.inf and stats.best(s) == math.inf


def test_spread_point_estimate() -> None:
    groups = {0.1: [2.0, 4.0], 0.5: [6.0]}  # seed means 3 and 6
    assert stats.spread(groups, "ratio") == pytest.approx(2.0)
    assert stats.spread(groups, "range") == pytest.approx(3.0)


def test_single_arm_t_interval_matches_hand_computation() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    iv = stats.single_interval(values)
    assert iv == stats.single_interval(values)  # deterministic, no resampling seed
    half = 3.182446305284263 * np.std(values, ddof=1) / 2.0  # t(0.975, df=3) · s / √4
    assert iv.estimate == pytest.approx(2.5)
    assert (iv.low, iv.high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    same = stats.single_interval([3.0, 3.0, 3.0])
    assert (same.estimate, same.low, same.high) == (3.0, 3.0, 3.0)
    one = stats.single_interval([3.0])  # one run: no interval at all
    assert (one.low, one.high) == (-math.inf, math.inf)


def test_paired_interval_uses_per_seed_log_ratios() -> None:
    # A shared seed effect (×1, ×2) cancels in the per-seed ratio: exactly 0.5 both times.
    iv = stats.paired_interval([1.0, 2.0], [2.0, 4.0], "ratio")
    assert (iv.estimate, iv.low, iv.high) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    assert "paired" in iv.method
    d = stats.paired_interval([1.0, 2.0, 4.0], [0.0, 1.5, 2.0], "difference")
    diffs = np.array([1.0, 0.5, 2.0])
    half = 4.302652729911275 * diffs.std(ddof=1) / math.sqrt(3)
    assert d.estimate == pytest.approx(diffs.mean())
    assert (d.low, d.high) == (pytest.approx(diffs.mean() - half), pytest.approx(diffs.mean() + half))


def test_welch_fallback_for_unmatched_seeds() -> None:
    iv = stats.welch_interval([1.0, 2.0, 3.0], [4.0, 6.0], "difference")
    assert iv.estimate == pytest.approx(2.0 - 5.0)
    assert iv.low < -3.0 < iv.high and "Welch" in iv.method
    one = stats.welch_interval([1.0], [4.0, 6.0], "difference")
    assert (one.low, one.high) == (-math.inf, math.inf)


def test_spread_interval_is_simultaneous_and_honours_mode() -> None:
    groups = [[2.0, 2.0], [6.0, 6.0]]
    iv = stats.spread_interval(groups, "ratio")
    assert (iv.estimate, iv.low, iv.high) == (3.0, 3.0, 3.0)
    assert stats.spread_interval(groups, "min", "min").estimate == 2.0
    assert stats.spread_interval(groups, "max", "max").estimate == 6.0
    # mode max: the best over the sweep is the largest mean, even if kind says min
    assert stats.spread_interval(groups, "min", "max").estimate == 6.0
    noisy = stats.spread_interval([[2.0, 4.0], [6.0, 6.5]], "range")
    assert noisy.estimate == pytest.approx(3.25)
    assert noisy.low == 0.0 and noisy.high > 4.0  # Bonferroni at n=2 is wide, honestly
    assert noisy.groups == 2
    rel = stats.spread_interval(
        [[2.0, 2.0], [6.0, 6.0]], "ratio", baseline=[[1.0, 1.0], [2.0, 2.0]], relation="ratio"
    )
    assert rel.estimate == pytest.approx(1.5)


def test_non_finite_values_use_the_range_rule() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        iv = stats.single_interval([1.0, math.inf])
        assert (iv.estimate, iv.low, iv.high) == (math.inf, 1.0, math.inf)
        all_inf = stats.single_interval([math.inf, math.inf])
        assert (all_inf.estimate, all_inf.low, all_inf.high) == (math.inf, math.inf, math.inf)
        # inf / inf is undefined: estimate NaN, interval unbounded rather than shortened
        undefined = stats.paired_interval([math.inf], [math.inf], "ratio")
        assert math.isnan(undefined.estimate)
        assert (undefined.low, undefined.high) == (-math.inf, math.inf)
        mixed = stats.paired_interval([1.0, 1.0], [math.inf, 2.0], "ratio")
        assert mixed.estimate == 0.0 and mixed.low == 0.0 and mixed.high == pytest.approx(0.5)
        empty = stats.single_interval([])
        assert math.isnan(empty.estimate)


def test_diverged_value_is_worst_for_every_statistic() -> None:
    assert stats.diverged_value("best", "min", 8.0) == math.inf
    assert stats.diverged_value("best", "max", 0.9) == -math.inf
    assert stats.diverged_value("final_over_best", "max", 1.0) == math.inf
    assert stats.diverged_value("cv", "min", 0.1) == math.inf
    assert stats.diverged_value("epoch_of_best", "min", 3.0) == 3.0


def test_seeds_needed_is_rough_but_sensible() -> None:
    iv = stats.paired_interval([1.00, 1.10], [1.0, 1.0], "ratio")  # mean log-ratio ~0.048
    assert iv.low < 1.0 < iv.high
    n = stats.seeds_needed(iv, 1.0)
    assert n is not None and 2 < n < 100
    assert stats.seeds_needed(stats.single_interval([1.0, 1.0]), 1.0) is None  # no spread known


def _seeds_needed_by_scan(iv: stats.Interval, effect: float, power: float = 0.8) -> int | None:
    """The definition: the first n from 2 up whose bound falls below the effect."""
    level = 1.0 - (1.0 - stats.CONFIDENCE) / iv.groups
    z = float(scipy_stats.norm.ppf(power))
    for n in range(2, stats.MAX_SEEDS_NEEDED + 1):
        if (stats.t_quantile(level, n - 1) + z) * iv.sd / math.sqrt(n) < effect:
            return n
    return None


@pytest.mark.parametrize("power", [0.8, 0.2])
@pytest.mark.parametrize("groups", [1, 5])
@pytest.mark.parametrize("effect", [3.0, 0.5, 0.05, 0.02])
def test_seeds_needed_bisection_equals_the_scan(effect: float, groups: int, power: float) -> None:
    iv = stats.Interval(1.0 + effect, 0.0, 3.0, "", sd=0.2, n=5, groups=groups)
    expected = _seeds_needed_by_scan(iv, abs(iv.estimate - 1.0), power)
    assert stats.seeds_needed(iv, 1.0, power=power) == expected


@pytest.mark.parametrize("n", [2, 3, 17, 1000])
def test_seeds_needed_at_the_boundary(n: int) -> None:
    """Effects at n's bound and a hair either side of it, where the answer steps by one."""
    z = float(scipy_stats.norm.ppf(0.8))
    bound = (stats.t_quantile(stats.CONFIDENCE, n - 1) + z) / math.sqrt(n)
    for effect in (bound, math.nextafter(bound, math.inf), math.nextafter(bound, 0.0), bound * 1.01):
        iv = stats.Interval(1.0 + effect, 0.0, 3.0, "", sd=1.0, n=5)
        assert stats.seeds_needed(iv, 1.0) == _seeds_needed_by_scan(iv, abs(iv.estimate - 1.0))


def test_worst() -> None:
    assert stats.worst("min") == math.inf and stats.worst("max") == -math.inf
    assert np.isinf(series([1.0, float("nan")], mode="max").y[-1])
