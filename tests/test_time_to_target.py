"""time_to_target: the first epoch/step/second/token at which a metric reaches a target
(AlgoPerf's scoring); a run that never gets there is censored at +inf."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pandas as pd
import pytest

from adrlab.adr.document import AdrError, Statistic, parse_adr_text
from adrlab.adr.per_run import TOKEN_CLOCK_PARAMS, Clock, needed_params
from adrlab.adr.stats import RunSeries, diverged_value, paired_interval, run_statistic, time_to_target
from adrlab.adr.verdict import CORE_COLUMNS, FAIL, PASS, evaluate
from tests.conftest import criterion, smoke_adr
from tests.test_adr_document import ADR
from tests.test_adr_verdict import epoch_rows, param_row

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


# --------------------------------------------------------------------------- the verdict engine's clocks

# Muon against AdamW on each clock: wall clock (paired ratio), and tokens on the epoch and the
# step-level val PPL.
TO_PPL_100 = "{{name: time_to_target, target: 100, axis: {axis}}}"
to_ppl_100 = partial(criterion, arm="muon", compare="<=")
within_200k_tokens = partial(
    to_ppl_100, role="secondary", statistic=TO_PPL_100.format(axis="tokens"), threshold=200000
)
CLOCK_ADR = smoke_adr(
    "ADR-0042: time to target",
    arms={"muon": '["optimizer=muon"]', "adamw": '["optimizer=adamw"]'},
    criteria=[
        to_ppl_100(
            "SECONDS",
            "Muon reaches val PPL 100 in no more wall clock than AdamW",
            baseline="adamw",
            metric="val_ppl",
            statistic=TO_PPL_100.format(axis="seconds"),
            threshold=1.0,
        ),
        within_200k_tokens("TOKENS", "Muon reaches val PPL 100 within 200k tokens", metric="val_ppl"),
        within_200k_tokens(
            "TOKENS-STEP", "Muon reaches step-level val PPL 100 within 200k tokens", metric="val_ppl_step"
        ),
    ],
    body="# body\n",
)
# Muon needs fewer epochs (3) but slower ones; AdamW needs 4 faster ones.
PPL = {"muon": [300.0, 120.0, 90.0, 80.0], "adamw": [300.0, 150.0, 110.0, 95.0]}
EPOCH_SECONDS = {"muon": [10.0, 11.0, 12.0, 13.0], "adamw": [5.0, 5.0, 5.0, 5.0]}
TRAIN_TOKENS, STEPS = 60_000.0, 59.0


def clock_evidence(slow_seed: dict[str, float] | None = None) -> pd.DataFrame:
    """Three seeds per arm; seed s adds s seconds to epoch 1 (so the pairs are not identical)."""
    rows: list[dict] = []
    for arm in PPL:
        for seed in (1, 2, 3):
            run = f"{arm}{seed}".ljust(16, "x")
            seconds = [t + (seed if i == 0 else 0.0) for i, t in enumerate(EPOCH_SECONDS[arm])]
            rows += epoch_rows(run, arm, seed, PPL[arm])
            rows += [
                dict(r, metric="epoch_time", value=t)
                for r, t in zip(epoch_rows(run, arm, seed, seconds), seconds)
            ]
            steps = [dict(r, x=29.0 * r["x"]) for r in epoch_rows(run, arm, seed, [400.0, 130.0, 99.0, 90.0])]
            rows += [dict(r, kind="step", metric="val_ppl_step") for r in steps]
            rows.append(param_row(run, arm, seed, "derived.n_train_tokens", TRAIN_TOKENS))
            rows.append(param_row(run, arm, seed, "derived.steps_per_epoch", STEPS))
    return pd.DataFrame(rows, columns=list(CORE_COLUMNS))


def clock_results(ev: pd.DataFrame, text: str = CLOCK_ADR) -> dict:
    return {r.id: r for r in evaluate(parse_adr_text(text, "adr/0042-ttt.md"), ev).results}


def test_seconds_are_the_cumulative_epoch_time_up_to_the_hit_and_pair_by_seed() -> None:
    r = clock_results(clock_evidence())["SECONDS"]
    muon = [33.0 + s for s in (1, 2, 3)]  # hits at epoch 3: 10 + s + 11 + 12
    adamw = [20.0 + s for s in (1, 2, 3)]  # hits at epoch 4: 5 + s + 5 + 5 + 5
    expected = paired_interval(muon, adamw, "ratio")
    assert r.estimate == pytest.approx(expected.estimate)
    assert (r.ci_low, r.ci_high) == pytest.approx((expected.low, expected.high))
    assert r.verdict == FAIL  # fewer epochs, yet more wall clock
    assert r.threshold == "time_to_target(val_ppl, target=100, axis=seconds): muon / adamw <= 1"


def test_a_censored_run_is_inf_on_the_seconds_axis_and_cannot_pass() -> None:
    ev = clock_evidence()
    never = (ev.run_id == "muon3".ljust(16, "x")) & (ev.metric == "val_ppl")
    ev.loc[never, "value"] = 150.0
    r = clock_results(ev)["SECONDS"]
    assert r.n == {"muon": 3, "adamw": 3} and r.estimate == math.inf
    assert r.ci_high == math.inf and r.verdict != PASS
    assert "non-finite value" in r.method


def test_a_run_without_its_clock_is_left_out_and_named() -> None:
    ev = clock_evidence()
    gone = (ev.run_id == "muon1".ljust(16, "x")) & (ev.metric == "epoch_time")
    gap = (ev.run_id == "muon2".ljust(16, "x")) & (ev.metric == "epoch_time") & (ev.x == 2)
    late_gap = (ev.run_id == "muon3".ljust(16, "x")) & (ev.metric == "epoch_time") & (ev.x == 4)
    r = clock_results(ev[~(gone | gap | late_gap)])["SECONDS"]
    assert r.n == {"muon": 1, "adamw": 3}  # muon3's gap is after its hit: still timed
    assert "muon1xxx (muon seed 1) has no epoch_time (the seconds clock): left out" in r.note
    assert "muon2xxx (muon seed 2) has no epoch_time for every epoch up to its hit" in r.note
    assert "seeds do not match, so unpaired" in r.method
    # Left out even when censored: keeping only the runs that never got there biases the arm slow.
    ev.loc[(ev.run_id == "muon1".ljust(16, "x")) & (ev.metric == "val_ppl"), "value"] = 150.0
    assert clock_results(ev[~gone])["SECONDS"].n == {"muon": 2, "adamw": 3}


def test_tokens_are_epochs_times_the_train_tokens_of_an_epoch() -> None:
    r = clock_results(clock_evidence())
    assert r["TOKENS"].estimate == pytest.approx(3 * TRAIN_TOKENS)  # hit at epoch 3, every seed
    assert r["TOKENS"].verdict == PASS
    # step-level validation every 29 steps: first ≤ 100 at step 87, the epoch's tokens spread over 59 steps
    assert r["TOKENS-STEP"].estimate == pytest.approx(87 * TRAIN_TOKENS / STEPS)


def test_capped_epochs_and_missing_token_counts_have_no_token_clock() -> None:
    ev = clock_evidence()
    cap = "trainer.max_steps_per_epoch"
    capped = pd.DataFrame([param_row("muon1".ljust(16, "x"), "muon", 1, cap, 59.0),
                           param_row("muon2".ljust(16, "x"), "muon", 2, cap, 500.0)])  # fmt: skip
    ev = pd.concat([ev, capped], ignore_index=True)
    ev = ev[~((ev.run_id == "muon3".ljust(16, "x")) & (ev.metric == "derived.n_train_tokens"))]
    r = clock_results(ev)["TOKENS"]
    assert r.n == {"muon": 1}  # the cap of 500 does not bind (59 steps per epoch): muon2 stays
    assert "muon1xxx (muon seed 1) has epochs cut short by trainer.max_steps_per_epoch=59" in r.note
    assert "muon3xxx (muon seed 3) has no derived.n_train_tokens (tokens per epoch): left out" in r.note


def test_a_diverged_run_is_censored_whatever_the_mode() -> None:
    assert diverged_value("time_to_target", "max", 2.0) == math.inf
    assert diverged_value("time_to_target", "min", 2.0) == math.inf


def test_the_seconds_clock_on_a_series_with_a_gap() -> None:
    clock = Clock(seconds=pd.Series([10.0, 21.0, math.nan], index=[1.0, 2.0, 3.0]))
    on = clock.on(np.array([1.0, 3.0]))
    assert on[0] == 10.0 and math.isnan(on[1])
    assert not clock.missing and Clock(seconds=pd.Series([math.nan], index=[1.0])).missing


SECONDS_CRITERION = "metric: val_ppl\n    statistic: {name: time_to_target, target: 100, axis: seconds}"


def with_axis(metric: str, axis: str | None) -> str:
    """CLOCK_ADR with its first criterion on ``metric`` and ``axis`` (None: no axis given)."""
    extra = f", axis: {axis}" if axis else ""
    stat = f"metric: {metric}\n    statistic: {{name: time_to_target, target: 100{extra}}}"
    return CLOCK_ADR.replace(SECONDS_CRITERION, stat)


@pytest.mark.parametrize(
    ("metric", "axis", "why"),
    [
        ("val_ppl_step", "seconds", "no per-step wall clock is logged"),
        ("train_loss", "seconds", "no per-step wall clock is logged"),
        ("train_loss", "epoch", "a per-step metric is indexed by step, not epoch"),
        ("val_ppl", "step", "a per-epoch metric is indexed by epoch, not step"),
    ],
)
def test_lint_rejects_an_axis_the_metric_cannot_have(metric: str, axis: str, why: str) -> None:
    with pytest.raises(AdrError) as err:
        parse_adr_text(with_axis(metric, axis), "adr/0042-ttt.md")
    kind = "per-epoch" if metric == "val_ppl" else "per-step"
    prefix = "adr/0042-ttt.md:19: criteria[0].statistic.axis: "
    assert str(err.value).startswith(f"{prefix}time_to_target axis {axis} does not fit {metric} ({kind}): ")
    assert why in str(err.value)


def test_every_axis_that_fits_parses_and_tokens_need_their_params_exported() -> None:
    fits = [("val_ppl", "epoch"), ("val_ppl", "seconds"), ("val_ppl", "tokens"), ("val_ppl", None),
            ("train_loss", "step"), ("train_loss", "tokens"), ("train_loss", None)]  # fmt: skip
    for metric, axis in fits:
        assert parse_adr_text(with_axis(metric, axis)).criteria[0].metric == metric
    criteria = parse_adr_text(CLOCK_ADR).criteria
    assert needed_params(criteria[:1]) == set()  # seconds: epoch_time is always exported
    assert needed_params(criteria[1:]) == set(TOKEN_CLOCK_PARAMS)
