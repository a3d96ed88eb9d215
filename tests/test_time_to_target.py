"""time_to_target: the first epoch/step/second/token at which a metric reaches a target
(AlgoPerf's scoring); a run that never gets there is censored at +inf."""

from __future__ import annotations

import math

import pytest

from adrlab.adr.document import AdrError, Statistic, parse_adr_text
from adrlab.adr.stats import RunSeries, run_statistic, time_to_target
from tests.test_adr_document import ADR

CURVE = RunSeries.from_points([1, 2, 3, 4, 5], [300.0, 120.0, 90.0, 95.0, 80.0])


def test_first_epoch_at_or_below_the_target_and_censored_when_never() -> None:
    assert time_to_target(CURVE, 100.0) == 3.0
    assert time_to_target(CURVE, 90.0) == 3.0  # reaching the target exactly counts
    assert time_to_target(CURVE, 85.0) == 5.0  # the first hit, not a later best
    assert time_to_target(CURVE, 10.0) == math.inf


def test_higher_is_better_metrics_reach_from_below() -> None:
    accuracy = RunSeries.from_points([10, 20, 30], [0.2, 0.55, 0.5], mode="max")
    assert time_to_target(accuracy, 0.5, axis="step") == 20.0
    assert time_to_target(accuracy, 0.9, axis="step") == math.inf


def test_nan_and_divergence_never_count_as_reaching_the_target() -> None:
    diverged = RunSeries.from_points([1, 2], [200.0, math.nan], diverged=True, grid=[1, 2, 3])
    assert time_to_target(diverged, 150.0) == math.inf
    assert time_to_target(diverged, 250.0) == 1.0  # reached before it diverged: it did reach it


def test_seconds_and_tokens_axes_use_the_run_clock() -> None:
    epoch_seconds = [10.0, 11.0, 12.0, 9.0, 10.0]
    assert time_to_target(CURVE, 100.0, axis="seconds", clock=epoch_seconds) == 33.0
    assert time_to_target(CURVE, 100.0, axis="tokens", clock=2040.0) == 3 * 2040.0
    with pytest.raises(ValueError, match="needs its clock"):
        time_to_target(CURVE, 100.0, axis="seconds")
    with pytest.raises(ValueError, match="choose one of"):
        time_to_target(CURVE, 100.0, axis="hours")


def test_schema_accepts_time_to_target_and_the_engine_dispatches_it() -> None:
    text = ADR.replace(
        "statistic: final_over_best", "statistic: {name: time_to_target, target: 100, axis: epoch}"
    )
    adr = parse_adr_text(text)
    stat = adr.criteria[0].statistic
    assert stat == Statistic("time_to_target", {"target": 100, "axis": "epoch"})
    assert run_statistic(CURVE, stat) == 3.0
    bad = ADR.replace(
        "statistic: final_over_best", "statistic: {name: time_to_target, target: 100, axis: hours}"
    )
    with pytest.raises(AdrError, match="epoch, step"):
        parse_adr_text(bad)
    with pytest.raises(AdrError, match="needs 'target'"):
        parse_adr_text(ADR.replace("statistic: final_over_best", "statistic: {name: time_to_target}"))
