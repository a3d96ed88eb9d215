"""Verdicts from synthetic evidence tables: PASS, FAIL, INCONCLUSIVE, NO DATA, divergence, CSV."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from adrlab.adr.document import parse_adr_text
from adrlab.adr.verdict import (
    CORE_COLUMNS,
    EVIDENCE_COLUMNS,
    FAIL,
    INCONCLUSIVE,
    INVALID,
    NO_DATA,
    PASS,
    decide,
    evaluate,
    load_evidence,
    save_evidence,
)

ADR = """\
---
title: "ADR-0002: V-RMSuon"
status: "Proposed"
experiments:
  smoke:
    seeds: [1, 2]
    overrides: ["scale=smoke"]
    arms:
      rmsuon_wd01: ["optimizer=rmsuon", "regularizer.weight_decay=0.1"]
      v_rmsuon: ["experiment=v_rmsuon"]
      v_lambda: {sweep: v_rmsuon_lambda}
criteria:
  - id: FLAG-1
    claim: "no sharp PPL rise within 10 epochs"
    role: flag
    arm: v_rmsuon
    metric: val_ppl
    statistic: final_over_best
    compare: "<="
    threshold: 1.05
  - id: PRIMARY
    claim: "final PPL at least 2% lower than RMSuon wd=0.1"
    role: primary
    arm: v_rmsuon
    baseline: rmsuon_wd01
    relation: ratio
    metric: val_ppl
    statistic: final
    compare: "<"
    threshold: 0.98
  - id: FLAG-3
    claim: "grad norm steadier"
    role: secondary
    arm: v_rmsuon
    baseline: rmsuon_wd01
    relation: difference
    metric: grad_norm
    statistic: cv
    compare: "<"
    threshold: 0.0
  - id: FLAG-4
    claim: "lambda matters little"
    role: flag
    arm: v_lambda
    metric: val_ppl
    statistic: {name: spread, over: regularizer.weight_decay, of: best, kind: ratio}
    compare: "<"
    threshold: 1.1
---
# body
"""


def epoch_rows(run: str, arm: str, seed: int, values: list[float], status: str = "FINISHED") -> list[dict]:
    return [
        {"run_id": run, "arm": arm, "seed": seed, "status": status, "kind": "epoch", "metric": "val_ppl",
         "x": float(i), "value": v}
        for i, v in enumerate(values, start=1)
    ]  # fmt: skip


def step_rows(run: str, arm: str, seed: int, values: list[float], metric: str = "grad_norm") -> list[dict]:
    return [
        {"run_id": run, "arm": arm, "seed": seed, "status": "FINISHED", "kind": "step", "metric": metric,
         "x": float(10 * i), "value": v}
        for i, v in enumerate(values, start=1)
    ]  # fmt: skip


def param_row(run: str, arm: str, seed: int, key: str, value: object) -> dict:
    return {"run_id": run, "arm": arm, "seed": seed, "status": "FINISHED", "kind": "param", "metric": key,
            "x": math.nan, "value": value}  # fmt: skip


def good_evidence() -> pd.DataFrame:
    rows = []
    rows += epoch_rows("v1aaaaaaaaaaaaaa", "v_rmsuon", 1, [12.0, 10.0, 9.0, 8.0])
    rows += epoch_rows("v2bbbbbbbbbbbbbb", "v_rmsuon", 2, [12.5, 10.2, 9.1, 8.2])
    rows += epoch_rows("b1cccccccccccccc", "rmsuon_wd01", 1, [11.0, 9.0, 9.5, 10.0])
    rows += epoch_rows("b2dddddddddddddd", "rmsuon_wd01", 2, [11.2, 9.1, 9.6, 10.2])
    rows += step_rows("v1aaaaaaaaaaaaaa", "v_rmsuon", 1, [1.0, 1.1, 1.0, 1.1])
    rows += step_rows("v2bbbbbbbbbbbbbb", "v_rmsuon", 2, [1.0, 1.05, 1.0, 1.05])
    rows += step_rows("b1cccccccccccccc", "rmsuon_wd01", 1, [1.0, 3.0, 1.0, 3.0])
    rows += step_rows("b2dddddddddddddd", "rmsuon_wd01", 2, [1.0, 2.5, 1.0, 2.5])
    for i, (wd, seed, best) in enumerate([(1e-5, 1, 8.0), (1e-5, 2, 8.2), (1e-4, 1, 8.3), (1e-4, 2, 8.1)]):
        run = f"s{i}eeeeeeeeeeeeee"
        rows += epoch_rows(run, "v_lambda", seed, [9.0, best])
        rows.append(param_row(run, "v_lambda", seed, "regularizer.weight_decay", wd))
        rows.append(param_row(run, "v_lambda", seed, "optimizer.name", "rmsuon"))
    return pd.DataFrame(rows, columns=list(CORE_COLUMNS))


def adr():
    return parse_adr_text(ADR, "adr/0002-v-rmsuon.md")


def by_id(verdict):
    return {r.id: r for r in verdict.results}


def test_all_pass_recommends_accepted() -> None:
    v = evaluate(adr(), good_evidence())
    r = by_id(v)
    assert r["FLAG-1"].verdict == PASS
    assert r["FLAG-1"].estimate == pytest.approx(1.0)
    assert r["FLAG-1"].n == {"v_rmsuon": 2}
    assert r["FLAG-1"].run_ids == ["v1aaaaaaaaaaaaaa", "v2bbbbbbbbbbbbbb"]
    assert r["PRIMARY"].verdict == PASS
    # paired by seed: the geometric mean of the per-seed ratios 8.0/10.0 and 8.2/10.2
    assert r["PRIMARY"].estimate == pytest.approx(math.sqrt(0.8 * 8.2 / 10.2))
    assert "paired t over 2 matched seeds" in r["PRIMARY"].method
    assert r["PRIMARY"].ci_low <= r["PRIMARY"].estimate <= r["PRIMARY"].ci_high
    assert r["PRIMARY"].n == {"v_rmsuon": 2, "rmsuon_wd01": 2}
    assert r["PRIMARY"].threshold == "final(val_ppl): v_rmsuon / rmsuon_wd01 < 0.98"
    assert r["FLAG-3"].verdict == PASS
    # seed means per lambda: 8.1 and 8.2 -> ratio 8.2 / 8.1; two seeds per value cannot bound
    # a max/min over values at 95% simultaneously (Bonferroni), so it stays INCONCLUSIVE
    assert r["FLAG-4"].verdict == INCONCLUSIVE
    assert r["FLAG-4"].estimate == pytest.approx(8.2 / 8.1)
    assert r["FLAG-4"].missing == []
    assert v.recommended_status == "Accepted" and v.human_status == "Proposed"
    assert "intersection–union" in v.rule
    assert v.counts == {PASS: 3, FAIL: 0, INCONCLUSIVE: 1, INVALID: 0, NO_DATA: 0}


def test_failing_primary_recommends_rejected() -> None:
    ev = good_evidence()
    ev.loc[(ev.arm == "v_rmsuon") & (ev.metric == "val_ppl") & (ev.x == 4), "value"] = [20.0, 21.0]
    v = evaluate(adr(), ev)
    r = by_id(v)
    assert r["FLAG-1"].verdict == FAIL  # 20/9 and 21/9.1: clearly above 1.05
    assert r["PRIMARY"].verdict == FAIL
    assert v.recommended_status == "Rejected"


def test_straddling_interval_is_inconclusive() -> None:
    ev = good_evidence()
    # final/best = 1.0 for seed 1 and 1.1 for seed 2: the interval [1.0, 1.1] straddles 1.05
    ev.loc[(ev.run_id == "v2bbbbbbbbbbbbbb") & (ev.metric == "val_ppl") & (ev.x == 4), "value"] = 9.1 * 1.1
    r = by_id(evaluate(adr(), ev))["FLAG-1"]
    assert r.verdict == INCONCLUSIVE
    assert r.ci_low < 1.0 and r.ci_high > 1.1  # a t-interval at n=2 is wider than [min, max]
    assert "straddles" in r.note


def test_too_few_seeds_is_inconclusive_and_names_missing() -> None:
    ev = good_evidence()
    ev = ev[ev.run_id != "v2bbbbbbbbbbbbbb"]
    v = evaluate(adr(), ev)
    r = by_id(v)["FLAG-1"]
    assert r.verdict == INCONCLUSIVE
    assert r.n == {"v_rmsuon": 1}
    assert "fewer than min_seeds=2 runs for v_rmsuon (n=1)" in r.note
    assert r.missing == ["v_rmsuon seed 2"]
    assert by_id(v)["PRIMARY"].verdict == INCONCLUSIVE
    assert v.recommended_status == "Proposed"


def test_missing_arm_is_no_data() -> None:
    ev = good_evidence()
    ev = ev[ev.arm != "rmsuon_wd01"]
    v = evaluate(adr(), ev)
    r = by_id(v)["PRIMARY"]
    assert r.verdict == NO_DATA
    assert r.missing == ["rmsuon_wd01 seed 1", "rmsuon_wd01 seed 2"]
    assert "no runs of rmsuon_wd01" in r.note
    assert math.isnan(r.estimate)
    assert v.recommended_status == "Proposed"
    assert v.counts[NO_DATA] == 2


def test_empty_evidence_is_no_data_everywhere() -> None:
    v = evaluate(adr(), pd.DataFrame(columns=list(EVIDENCE_COLUMNS)))
    assert [r.verdict for r in v.results] == [NO_DATA] * 4
    assert by_id(v)["FLAG-1"].missing == ["v_rmsuon seed 1", "v_rmsuon seed 2"]


def test_unknown_scale_has_no_declared_seeds() -> None:
    v = evaluate(adr(), pd.DataFrame(columns=list(EVIDENCE_COLUMNS)), scale="paper")
    r = by_id(v)["FLAG-1"]
    assert r.verdict == NO_DATA and r.missing == []
    assert "no experiments declared for scale paper" in r.note


def test_diverged_run_is_worst_not_dropped() -> None:
    ev = good_evidence()
    keep = ~((ev.run_id == "v2bbbbbbbbbbbbbb") & (ev.metric == "val_ppl") & (ev.x > 2))
    ev = ev[keep].copy()
    ev.loc[ev.run_id == "v2bbbbbbbbbbbbbb", "status"] = "DIVERGED"
    r = by_id(evaluate(adr(), ev))
    flag1 = r["FLAG-1"]
    assert flag1.n == {"v_rmsuon": 2}  # counted, not dropped
    assert flag1.estimate == math.inf and flag1.ci_high == math.inf
    assert flag1.verdict == INCONCLUSIVE  # seed 1 alone passes, the diverged one fails
    assert "diverged: v2bbbbbb (count as worst)" in flag1.note
    assert r["PRIMARY"].estimate == math.inf
    # both diverged: the whole interval violates the threshold
    ev.loc[ev.run_id == "v1aaaaaaaaaaaaaa", "status"] = "DIVERGED"
    ev = ev[~((ev.run_id == "v1aaaaaaaaaaaaaa") & (ev.metric == "val_ppl") & (ev.x > 3))]
    r = by_id(evaluate(adr(), ev))
    assert r["FLAG-1"].verdict == FAIL and r["PRIMARY"].verdict == FAIL


def test_diverged_run_uses_planned_epochs() -> None:
    # Every run of the arm diverged by epoch 3; only trainer.epochs says 4 were planned.
    rows = epoch_rows("d1", "v_rmsuon", 1, [9.0, 8.0, 8.0], "DIVERGED")
    rows += epoch_rows("d2", "v_rmsuon", 2, [9.0, 8.0, 8.1], "DIVERGED")
    # diverged: as_logged opts out of "a diverged run is the worst value", so the series counts
    text = ADR.replace(
        "    statistic: final_over_best\n", "    statistic: final_over_best\n    diverged: as_logged\n"
    )
    one = parse_adr_text(text, "a.md")
    assert one.criteria[0].diverged == "as_logged"
    r = by_id(evaluate(one, pd.DataFrame(rows)))["FLAG-1"]
    assert r.estimate == pytest.approx((1.0 + 8.1 / 8.0) / 2)  # nothing says the runs stopped early
    rows += [param_row(run, "v_rmsuon", seed, "trainer.epochs", 4) for run, seed in (("d1", 1), ("d2", 2))]
    for row in rows:
        row["status"] = "DIVERGED"
    r = by_id(evaluate(one, pd.DataFrame(rows)))["FLAG-1"]
    assert r.estimate == math.inf and r.verdict == FAIL


def test_unfinished_runs_are_skipped() -> None:
    ev = good_evidence()
    ev.loc[ev.run_id == "v2bbbbbbbbbbbbbb", "status"] = "RUNNING"
    r = by_id(evaluate(adr(), ev))["FLAG-1"]
    assert r.n == {"v_rmsuon": 1} and r.verdict == INCONCLUSIVE
    assert "v2bbbbbb (v_rmsuon seed 2) skipped: status RUNNING" in r.note


def test_finished_run_without_the_metric_is_reported() -> None:
    ev = good_evidence()
    ev = ev[~((ev.run_id == "v2bbbbbbbbbbbbbb") & (ev.metric == "grad_norm"))]
    r = by_id(evaluate(adr(), ev))["FLAG-3"]
    assert r.n["v_rmsuon"] == 1
    assert "v2bbbbbb (v_rmsuon seed 2) has no grad_norm for cv" in r.note
    assert r.verdict == INCONCLUSIVE


def test_spread_needs_two_values_and_params() -> None:
    ev = good_evidence()
    ev.loc[(ev.arm == "v_lambda") & (ev.metric == "regularizer.weight_decay"), "value"] = 1e-5
    r = by_id(evaluate(adr(), ev))["FLAG-4"]
    assert r.verdict == INCONCLUSIVE
    assert "only one value of regularizer.weight_decay" in r.note
    ev = good_evidence()
    ev = ev[~((ev.run_id == "s3eeeeeeeeeeeeee") & (ev.kind == "param"))]
    r = by_id(evaluate(adr(), ev))["FLAG-4"]
    assert "s3eeeeee (v_lambda seed 2) has no param regularizer.weight_decay" in r.note
    assert "fewer than min_seeds=2 runs for v_lambda at regularizer.weight_decay=0.0001 (n=1)" in r.note


def test_lifecycle_status_is_kept() -> None:
    v = evaluate(parse_adr_text(ADR.replace('"Proposed"', '"Deprecated"'), "a.md"), good_evidence())
    assert v.recommended_status == "Deprecated"


@pytest.mark.parametrize(
    ("compare", "low", "high", "expected"),
    [
        ("<", 0.5, 0.9, PASS),
        ("<", 1.0, 1.2, FAIL),
        ("<", 0.9, 1.0, INCONCLUSIVE),
        ("<=", 0.9, 1.0, PASS),
        ("<=", 1.0, 1.1, INCONCLUSIVE),
        (">", 1.1, 2.0, PASS),
        (">", 0.5, 1.0, FAIL),
        (">=", 1.0, 2.0, PASS),
        (">=", 0.2, 0.9, FAIL),
        ("<", -math.inf, math.inf, INCONCLUSIVE),
        ("<", math.nan, math.nan, INCONCLUSIVE),
    ],
)
def test_decide(compare: str, low: float, high: float, expected: str) -> None:
    assert decide(compare, 1.0, low, high) == expected


def test_missing_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        evaluate(adr(), pd.DataFrame({"run_id": ["a"]}))


# --------------------------------------------------------------------------- runs.csv


def test_csv_round_trip_rederives_the_same_verdict(tmp_path: Path) -> None:
    ev = good_evidence()
    ev.loc[0, "value"] = 0.1 + 0.2  # a float whose shortest repr has 17 digits
    path = save_evidence(ev, tmp_path / "runs.csv")
    loaded = load_evidence(path)
    assert list(loaded.columns) == list(EVIDENCE_COLUMNS)
    assert (0.1 + 0.2) in loaded["value"].tolist()
    assert repr(evaluate(adr(), loaded).to_dict()) == repr(evaluate(adr(), ev).to_dict())
    # re-saving the loaded table, or a shuffled copy, gives the same bytes
    again = save_evidence(loaded, tmp_path / "again.csv")
    shuffled = save_evidence(ev.sample(frac=1.0, random_state=3), tmp_path / "shuffled.csv")
    assert again.read_bytes() == path.read_bytes() == shuffled.read_bytes()


def test_csv_format(tmp_path: Path) -> None:
    rows = [*epoch_rows("r1", "a", 1, [1.5, math.inf]), param_row("r1", "a", 1, "optimizer.name", "rmsuon")]
    rows.append({**epoch_rows("r1", "a", 1, [math.nan])[0], "x": 3.0})
    path = save_evidence(pd.DataFrame(rows), tmp_path / "runs.csv")
    text = path.read_text(encoding="utf-8")
    assert text.splitlines() == [
        "run_id,arm,seed,status,kind,metric,x,value,scale,git_sha,config_hash",
        "r1,a,1,FINISHED,epoch,val_ppl,1,1.5,smoke,unknown,unknown",
        "r1,a,1,FINISHED,epoch,val_ppl,2,inf,smoke,unknown,unknown",
        "r1,a,1,FINISHED,epoch,val_ppl,3,nan,smoke,unknown,unknown",
        "r1,a,1,FINISHED,param,optimizer.name,,rmsuon,smoke,unknown,unknown",
    ]
    assert "\r" not in text
    loaded = load_evidence(path)
    assert loaded["value"].tolist()[:2] == [1.5, math.inf]
    assert loaded["value"].tolist()[3] == "rmsuon"
    assert math.isnan(loaded["x"].iloc[3])
