"""Validity guards, paired vs unpaired intervals, Holm, diverged `best`, scales: the edge cases."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adrlab.adr import guards
from adrlab.adr.document import parse_adr, parse_adr_text
from adrlab.adr.verdict import (
    CORE_COLUMNS,
    FAIL,
    INCONCLUSIVE,
    INVALID,
    NO_DATA,
    PASS,
    evaluate,
    load_evidence,
)
from tests.conftest import criterion, smoke_adr

ROOT = Path(__file__).resolve().parents[1]

# Two arms against base; ADR is a str.format template: {statistic} is P1's statistic (hence the
# doubled braces of arm treat).
against_base = partial(criterion, baseline="base", metric="val_ppl", compare="<", threshold=1.0)
ADR = smoke_adr(
    "ADR-0099: guards",
    arms={
        "base": '["optimizer=rmsuon"]',
        "treat": '{{overrides: ["optimizer=rmsuon"], control: base}}',
        "other": '["optimizer=adamw"]',
    },
    criteria=[
        against_base("P1", "treat beats base", arm="treat", statistic="{statistic}"),
        against_base("P2", "other beats base", arm="other", statistic="final"),
    ],
)


def rows(run: str, arm: str, seed: int, values: list[float], status: str = "FINISHED") -> list[tuple]:
    return [(run, arm, seed, status, "epoch", "val_ppl", float(i), v) for i, v in enumerate(values, start=1)]


def table(runs: dict[tuple[str, int], list[float]], diverged: tuple[str, ...] = ()) -> pd.DataFrame:
    out = []
    for (arm, seed), values in runs.items():
        run = f"{arm}{seed}".ljust(16, "x")
        out += rows(run, arm, seed, values, "DIVERGED" if arm in diverged else "FINISHED")
        out.append((run, arm, seed, "FINISHED", "param", "data.vocab_size", math.nan, 512.0))
    return pd.DataFrame(out, columns=list(CORE_COLUMNS))


def adr(statistic: str = "final"):
    return parse_adr_text(ADR.format(statistic=statistic), "adr/0099-guards.md")


def base_runs(treat_factor: float = 0.8, other_factor: float = 0.9) -> dict[tuple[str, int], list[float]]:
    out = {}
    for seed, noise in ((1, 1.0), (2, 1.05), (3, 0.97)):
        base = [30.0 * noise, 20.0 * noise, 18.0 * noise]
        out[("base", seed)] = base
        out[("treat", seed)] = [v * treat_factor * (1 + 0.01 * seed) for v in base]
        out[("other", seed)] = [v * other_factor * (1 + 0.002 * seed) for v in base]
    return out


def by_id(v):
    return {r.id: r for r in v.results}


def test_adr_0001_snapshot_marks_the_collapsed_arm() -> None:
    from adrlab.adr.report import vocab_size

    doc = parse_adr(next((ROOT / "adr").glob("0001-*.md")))
    ev = load_evidence(ROOT / "reports" / "adr-0001" / "runs-smoke.csv")
    assert vocab_size(doc, "smoke", ev) in (None, 512)  # the snapshot or the composed config says 512
    v = evaluate(doc, ev, "smoke", vocab_size=512)
    for r in v.results:
        collapsed = "timescale_per_step" in (r.arm, r.baseline)
        assert (r.verdict == INVALID) == collapsed, r.id
        if collapsed:
            assert any("did not learn or collapsed" in g for g in r.guards)
    stable = by_id(v)["STABLE-per_step"]  # 512/468 ≤ 1.10 used to PASS
    assert stable.verdict == INVALID


def test_intervention_that_reproduces_its_control_is_invalid() -> None:
    runs = base_runs()
    for seed in (1, 2, 3):
        runs[("treat", seed)] = [v * (1 + 2e-4) for v in runs[("base", seed)]]
    r = by_id(evaluate(adr(), table(runs)))["P1"]
    assert r.verdict == INVALID
    assert any("does not act" in g and "control base" in g for g in r.guards)
    # a real effect: not flagged
    assert by_id(evaluate(adr(), table(base_runs())))["P1"].verdict == PASS


def test_paired_when_seeds_match_welch_when_not() -> None:
    r = by_id(evaluate(adr(), table(base_runs())))["P1"]
    assert r.method == "paired t over 3 matched seeds"
    runs = base_runs()
    del runs[("treat", 3)]
    r = by_id(evaluate(adr(), table(runs)))["P1"]
    assert "Welch" in r.method and "seeds do not match" in r.method


def test_diverged_runs_are_worst_even_for_best() -> None:
    # Every treat run diverged after a brilliant first epoch: `best` must not look good.
    runs = base_runs()
    for seed in (1, 2, 3):
        runs[("treat", seed)] = [1.0]
    ev = table(runs, diverged=("treat",))
    r = by_id(evaluate(adr("best"), ev))["P1"]
    assert r.estimate == math.inf and r.verdict == FAIL


def test_holm_decides_rejection_and_iut_acceptance() -> None:
    v = evaluate(adr(), table(base_runs()))
    assert v.recommended_status == "Accepted" and "intersection–union" in v.rule
    # P2 fails clearly: Rejected, and the rule names Holm
    v = evaluate(adr(), table(base_runs(other_factor=1.5)))
    assert by_id(v)["P2"].verdict == FAIL
    assert v.recommended_status == "Rejected" and "Holm" in v.rule and "P2" in v.rule


def test_marginal_fail_does_not_survive_holm() -> None:
    runs = base_runs()
    for seed, f in (
        (1, math.exp(0.04)),
        (2, math.exp(0.06)),
        (3, math.exp(0.08)),
    ):  # t = 5.2: fails at 95% (4.30), not at 97.5% (6.21)
        runs[("other", seed)] = [v * f for v in runs[("base", seed)]]
    v = evaluate(adr(), table(runs))
    assert by_id(v)["P2"].verdict == FAIL
    assert v.recommended_status == "Proposed" and "does not survive Holm" in v.rule


def test_inconclusive_names_interval_and_rough_seeds() -> None:
    runs = base_runs()
    for seed, f in ((1, 0.95), (2, 1.03), (3, 0.97)):
        runs[("other", seed)] = [v * f for v in runs[("base", seed)]]
    r = by_id(evaluate(adr(), table(runs)))["P2"]
    assert r.verdict == INCONCLUSIVE
    assert "straddles the threshold" in r.note and f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" in r.note
    assert r.seeds_needed is not None and r.seeds_needed > 3


def test_another_scales_runs_never_stand_in() -> None:
    ev = table(base_runs()).assign(scale="smoke")
    v = evaluate(adr(), ev, "paper")
    assert all(r.verdict == NO_DATA for r in v.results)


def test_regime_and_edge_warnings() -> None:
    text = (
        ADR.format(statistic="final").split("criteria:")[0]
        + """criteria:
  - id: S
    claim: "sweep"
    role: flag
    arm: other
    metric: val_ppl
    statistic: {name: spread, over: regularizer.weight_decay, of: final, kind: min}
    compare: "<"
    threshold: 100
---
"""
    )
    doc = parse_adr_text(text, "adr/0099-guards.md")
    out = []
    for i, (lam, level) in enumerate([(0.01, 10.0), (0.1, 12.0), (1.0, 14.0)]):
        for seed in (1, 2, 3):
            run = f"o{i}{seed}".ljust(16, "x")
            out += rows(run, "other", seed, [level + 0.01 * seed] * 3)
            out.append((run, "other", seed, "FINISHED", "param", "regularizer.weight_decay", math.nan, lam))
            for key, value in (
                ("derived.lambda", lam),
                ("derived.tau_iter", 5000.0),
                ("derived.steps_per_epoch", 10.0),
            ):
                out.append((run, "other", seed, "FINISHED", "param", key, math.nan, value))
    r = evaluate(doc, pd.DataFrame(out, columns=list(CORE_COLUMNS))).results[0]
    assert r.verdict == PASS  # warnings do not change the verdict
    assert any("τ_iter 5000 steps exceeds the run's 30 steps" in g for g in r.guards)
    assert any("optimum regularizer.weight_decay=0.01 is on the edge" in g for g in r.guards)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "metric: val_ppl\n    statistic: final\n",
            "metric: val_pll\n    statistic: final\n",
            "adrlab never logs 'val_pll'; valid: val_ppl",
        ),
        (
            "statistic: final\n",
            "statistic: {name: slope, start: 1}\n",
            "ratio of slope (which can change sign)",
        ),
        ("control: base}", "control: nobody}", "unknown control arm 'nobody'"),
    ],
)
def test_lint_level_schema_errors(old: str, new: str, message: str) -> None:
    from adrlab.adr.document import AdrError

    text = ADR.format(statistic="final").replace(old, new, 1)
    with pytest.raises(AdrError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_adr_text(text, "adr/0099-guards.md")


def test_spread_kind_must_match_mode() -> None:
    from adrlab.adr.document import AdrError

    text = ADR.format(statistic="{name: spread, over: regularizer.weight_decay, of: best, kind: min}")
    text = text.replace(
        '    compare: "<"\n    threshold: 1.0\n  - id: P2',
        '    mode: max\n    compare: "<"\n    threshold: 1.0\n  - id: P2',
    )
    with pytest.raises(AdrError, match="kind: min is the best value over the sweep, but mode: max"):
        parse_adr_text(text, "adr/0099-guards.md")


def test_adr_lint_reports_misspelled_metric_and_signed_ratio(tmp_path: Path) -> None:
    from adrlab.adr.lint import lint

    text = ADR.format(statistic="final").replace(
        "metric: val_ppl\n    statistic: final\n", "metric: val_pll\n    statistic: final\n", 1
    )
    (tmp_path / "0099-misspelled.md").write_text(text, encoding="utf-8")
    signed = ADR.format(statistic="{name: slope, start: 1}")
    (tmp_path / "0098-signed.md").write_text(signed, encoding="utf-8")
    messages = [str(m) for m in lint([tmp_path])]
    assert any(
        "0099-misspelled.md:" in m and "adrlab never logs 'val_pll'; valid: val_ppl, val_loss" in m
        for m in messages
    )
    assert any("0098-signed.md:" in m and "use relation: difference" in m for m in messages)


# --------------------------------------------------------------------------- acts: sweep arms

SWEEP_ADR = (
    ADR.format(statistic="final")
    .split("criteria:")[0]
    .replace(
        'treat: {overrides: ["optimizer=rmsuon"], control: base}',
        "treat: {sweep: adamw_decoupled_lambda, control: base}",
    )
    + """criteria:
  - id: TUNED
    claim: "the tuned sweep stays below 19"
    role: primary
    arm: treat
    metric: val_ppl
    statistic: {name: spread, over: regularizer.weight_decay, of: final, kind: min}
    compare: "<"
    threshold: 19.0
---
"""
)
assert "{sweep: adamw_decoupled_lambda" in SWEEP_ADR


SWEEP_NOISE = ((1, 1.0), (2, 1.01), (3, 0.995))


def sweep_table(factors: dict[float, float]) -> pd.DataFrame:
    """base runs, and one treat run per (λ, seed) whose val PPL is base's times ``factors[λ]``
    (and a seed jitter of 1e-4 to 3e-4)."""
    out = []
    for seed, noise in SWEEP_NOISE:
        base = [30.0 * noise, 20.0 * noise, 18.0 * noise]
        out += rows(f"base{seed}".ljust(16, "x"), "base", seed, base)
        for i, (lam, factor) in enumerate(factors.items()):
            run = f"t{i}{seed}".ljust(16, "x")
            out += rows(run, "treat", seed, [v * factor * (1 + 1e-4 * seed) for v in base])
            out.append((run, "treat", seed, "FINISHED", "param", "regularizer.weight_decay", math.nan, lam))
    return pd.DataFrame(out, columns=list(CORE_COLUMNS))


def test_a_non_acting_swept_value_is_left_out_and_the_rest_judged() -> None:
    # λ = 0.01 reproduces the control to 1e-4..3e-4 (it would be the sweep's best, on the edge);
    # 0.1 and 1 act and sit above the threshold: judged on them, the criterion fails.
    doc = parse_adr_text(SWEEP_ADR, "adr/0099-guards.md")
    r = evaluate(doc, sweep_table({0.01: 1.0, 0.1: 1.1, 1.0: 1.3})).results[0]
    assert r.verdict == FAIL, (r.verdict, r.note, r.guards)
    assert not any(g.startswith("INVALID: ") for g in r.guards)
    finals_01 = [18.0 * noise * 1.1 * (1 + 1e-4 * seed) for seed, noise in SWEEP_NOISE]
    assert r.estimate == pytest.approx(sum(finals_01) / 3)
    assert r.n == {"treat": 6} and not any(run.startswith("t0") for run in r.run_ids)
    assert "simultaneous t over 2 swept values" in r.method
    assert r.note.startswith(
        "treat at regularizer.weight_decay=0.01 (max difference 0.0003) does not act (within a relative "
        "0.001 of its control base at every epoch for every seed): left out of the arm, the criterion is "
        "judged on regularizer.weight_decay=0.1, 1"
    ), r.note
    assert not any("is on the edge" in g for g in r.guards)  # the edge guard sees the filtered arm too


def test_a_sweep_arm_where_no_value_acts_is_invalid() -> None:
    doc = parse_adr_text(SWEEP_ADR, "adr/0099-guards.md")
    r = evaluate(doc, sweep_table({0.01: 1.0, 0.1: 1.0 + 2e-4})).results[0]
    assert r.verdict == INVALID
    assert r.n == {"treat": 6}  # kept whole: the block still shows what was measured
    assert (
        "INVALID: the intervention does not act: treat at regularizer.weight_decay=0.01, 0.1 stays within "
        "a relative 0.001 of its control base at every epoch for every seed (max difference 0.0005)"
    ) in r.guards
    assert "left out" not in r.note


def test_a_non_sweep_arm_that_does_not_act_stays_invalid_as_before() -> None:
    runs = base_runs()
    for seed in (1, 2, 3):
        runs[("treat", seed)] = [v * (1 + 2e-4) for v in runs[("base", seed)]]
    r = by_id(evaluate(adr(), table(runs)))["P1"]
    assert r.verdict == INVALID and r.n == {"treat": 3, "base": 3}
    assert r.guards == [
        "INVALID: the intervention does not act: treat stays within a relative 0.001 of its control base "
        "at every epoch for every seed (max difference 0.0002)"
    ]
    assert "left out" not in r.note


def test_a_sweep_arms_regime_is_checked_at_each_of_its_values() -> None:
    """One run cannot stand for a sweep arm: each swept value has its own τ_iter, and the
    warning names the values that miss (sorted), each with its own measured RMS."""
    from adrlab.adr.guards import regime_guard

    out, ids = [], []
    for i, (lam, tau) in enumerate([(1.0, 5.0), (0.01, 5000.0), (0.1, 20.0)]):
        for seed in (1, 2):
            run = f"r{i}{seed}".ljust(16, "x")
            ids.append(run)
            out += rows(run, "sweep", seed, [10.0, 9.0, 8.0])
            params = {
                "regularizer.weight_decay": lam,
                "derived.lambda": lam,
                "derived.tau_iter": tau,
                "derived.steps_per_epoch": 10.0,
                "derived.predicted_weight_rms": 0.1 * (i + 1),
            }
            out += [(run, "sweep", seed, "FINISHED", "param", k, math.nan, v) for k, v in params.items()]
            out += [
                (run, "sweep", seed, "FINISHED", "step", "weight_rms", float(x), 0.5 * (i + 1) + x)
                for x in (10, 30)
            ]
    evidence = pd.DataFrame(out, columns=list(CORE_COLUMNS))
    assert regime_guard(evidence, "sweep", ids) == (
        "regime of sweep at regularizer.weight_decay=0.01: τ_iter 5000 steps exceeds the run's 30 steps: "
        "the decay barely acts; final weight RMS 31 vs predicted √(η/2λ) 0.2"
        " | at regularizer.weight_decay=1: τ_iter 5 steps is below one epoch (10 steps): "
        "the weights forget within an epoch; final weight RMS 30.5 vs predicted √(η/2λ) 0.1"
    )
    # One value (one run per seed, same regime): the message names no value, as before.
    one = evidence[evidence["run_id"].str.startswith("r1")]
    assert regime_guard(one, "sweep", ids[2:4]) == (
        "regime of sweep: τ_iter 5000 steps exceeds the run's 30 steps: the decay barely acts; "
        "final weight RMS 31 vs predicted √(η/2λ) 0.2"
    )
    assert regime_guard(evidence, "sweep", ids[4:]) is None  # λ = 0.1 fits the run


def test_relative_difference_reads_only_the_epochs_both_runs_logged() -> None:
    def run(x: list[float], v: list[float]) -> tuple[np.ndarray, np.ndarray]:
        return np.array(x), np.array(v)

    a = run([1, 2, 3, 4], [10.0, 20.0, math.nan, 40.0])
    b = run([2, 3, 4, 5], [10.0, 30.0, 40.0, 50.0])
    assert guards._rel_diff(a, b) == pytest.approx(1.0)  # epoch 2: 20/10 - 1; epoch 3 is NaN in a
    assert guards._rel_diff(a, run([5, 6], [1.0, 1.0])) == math.inf  # no epoch in common
    assert guards._rel_diff(a, run([1], [0.0])) == math.inf  # a control at 0
    assert guards._rel_diff(run([], []), run([], [])) == math.inf


def test_a_note_names_a_few_swept_values_and_counts_the_rest() -> None:
    assert guards._some_keys_text([0.1, 1.0, 10.0]) == "0.1, 1, 10"
    many = [0.001 * 2**i for i in range(guards.VALUES_NAMED + 3)]
    text = guards._some_keys_text(many)
    assert text.startswith("0.001, 0.002, ") and text.endswith(f" and 3 more values up to {many[-1]:g}")
    assert text.count(",") == guards.VALUES_NAMED - 1
