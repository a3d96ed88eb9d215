"""A statistic measured relative to a run's own logged param (`relative_to`), e.g. ADR-0003's
final weight RMS over the predicted equilibrium √(η_max/2λ_max) of the same run."""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from adrlab.adr.document import RELATIVE_TO_REFUSED, STATISTICS, AdrError, Statistic, parse_adr_text
from adrlab.adr.lint import ERROR, lint
from adrlab.adr.metrics import NUMERIC_PARAMS
from adrlab.adr.per_run import needed_params
from adrlab.adr.stats import paired_interval, single_interval
from adrlab.adr.verdict import CORE_COLUMNS, FAIL, NO_DATA, PASS, evaluate
from tests.conftest import criterion, smoke_adr
from tests.test_adr_verdict import param_row

README = Path(__file__).resolve().parents[1] / "adr" / "README.md"
PREDICTED = "derived.predicted_weight_rms"

# ADR-0003's band on the equilibrium RMS and its comparison with the constant schedule: every
# criterion is ema_coupled's final weight RMS over its own predicted equilibrium.
equilibrium_rms = partial(
    criterion,
    arm="ema_coupled",
    metric="weight_rms_epoch",
    statistic=f"{{name: final, relative_to: {PREDICTED}}}",
)
ADR = smoke_adr(
    "ADR-0003: coupled schedule",
    arms={"constant": '["experiment=rmsuon_wd05"]', "ema_coupled": '["experiment=ema_coupled"]'},
    criteria=[
        equilibrium_rms("RMS-EQ-LOW", "final weight RMS at least half the predicted equilibrium",
                        mode="max", compare=">=", threshold=0.5),
        equilibrium_rms("RMS-EQ-HIGH", "final weight RMS at most twice the predicted equilibrium",
                        compare="<=", threshold=2),
        equilibrium_rms("RMS-VS-CONSTANT", "closer to its equilibrium than the constant schedule",
                        role="secondary", baseline="constant", compare="<", threshold=1.2),
    ],
    body="# body\n",
)  # fmt: skip
FINALS = {"ema_coupled": [0.060, 0.058, 0.061], "constant": [0.090, 0.085, 0.095]}
PREDICTIONS = {"ema_coupled": [0.055, 0.055, 0.050], "constant": [0.077, 0.080, 0.070]}


def rms_rows(run: str, arm: str, seed: int, final: float) -> list[dict]:
    return [
        {"run_id": run, "arm": arm, "seed": seed, "status": "FINISHED", "kind": "epoch",
         "metric": "weight_rms_epoch", "x": float(epoch), "value": value}
        for epoch, value in enumerate([0.03, 0.05, final], start=1)
    ]  # fmt: skip


def evidence(predicted: dict[str, list[object]] | None = None) -> pd.DataFrame:
    predicted = predicted or PREDICTIONS
    rows: list[dict] = []
    for arm, finals in FINALS.items():
        for seed, (final, p) in enumerate(zip(finals, predicted[arm], strict=True), start=1):
            run = f"{arm[:3]}{seed}" + "x" * 12
            rows += rms_rows(run, arm, seed, final)
            if p is not None:
                rows.append(param_row(run, arm, seed, PREDICTED, p))
    return pd.DataFrame(rows, columns=list(CORE_COLUMNS))


def results(text: str = ADR, ev: pd.DataFrame | None = None) -> dict:
    v = evaluate(parse_adr_text(text, "adr/0003-ema.md"), evidence() if ev is None else ev)
    return {r.id: r for r in v.results}


def relative(arm: str) -> list[float]:
    return [f / p for f, p in zip(FINALS[arm], PREDICTIONS[arm], strict=True)]


def test_each_run_is_divided_by_its_own_param_then_judged_as_one_arm() -> None:
    r = results()
    expected = single_interval(relative("ema_coupled"))
    low, high = r["RMS-EQ-LOW"], r["RMS-EQ-HIGH"]
    assert low.estimate == pytest.approx(sum(relative("ema_coupled")) / 3)
    assert (low.ci_low, low.ci_high) == pytest.approx((expected.low, expected.high))
    assert low.verdict == PASS and high.verdict == PASS  # ≈ 1.13 [1.0, 1.26] within [0.5, 2]
    assert low.n == {"ema_coupled": 3}
    assert low.threshold == "final(weight_rms_epoch) / derived.predicted_weight_rms >= 0.5"
    assert high.threshold == "final(weight_rms_epoch) / derived.predicted_weight_rms <= 2"


def test_a_relation_pairs_the_relative_values_seed_by_seed() -> None:
    r = results()["RMS-VS-CONSTANT"]
    expected = paired_interval(relative("ema_coupled"), relative("constant"), "ratio")
    assert r.estimate == pytest.approx(expected.estimate)
    assert (r.ci_low, r.ci_high) == pytest.approx((expected.low, expected.high))
    assert "paired t over 3 matched seeds" in r.method
    assert r.threshold == (
        "(final(weight_rms_epoch) / derived.predicted_weight_rms): ema_coupled / constant < 1.2"
    )


def test_a_run_without_a_finite_positive_param_is_left_out_and_named() -> None:
    predicted: dict[str, list[object]] = {
        "ema_coupled": [0.055, None, math.inf],
        "constant": [0.0, 0.080, -1.0],
    }
    r = results(ev=evidence(predicted))
    low = r["RMS-EQ-LOW"]
    assert low.n == {"ema_coupled": 1} and low.run_ids == ["ema1xxxxxxxxxxxx"]
    assert low.estimate == pytest.approx(0.060 / 0.055)
    assert "ema2xxxx (ema_coupled seed 2) has no numeric param derived.predicted_weight_rms" in low.note
    assert "ema3xxxx (ema_coupled seed 3) has derived.predicted_weight_rms = inf" in low.note
    assert "relative_to needs a finite value > 0: left out" in low.note
    assert "con1xxxx (constant seed 1) has derived.predicted_weight_rms = 0" in r["RMS-VS-CONSTANT"].note
    # A word where a number belongs (an old export) counts as no value; none usable: NO DATA.
    words: dict[str, list[object]] = {"ema_coupled": ["n/a"] * 3, "constant": PREDICTIONS["constant"]}
    none_left = results(ev=evidence(words))["RMS-EQ-LOW"]
    assert none_left.verdict == NO_DATA and "no usable runs of ema_coupled" in none_left.note


def test_the_verdict_moves_with_the_param() -> None:
    # The same weights judged against a prediction four times larger: a quarter of it, FAIL.
    larger = {arm: [4 * p for p in ps] for arm, ps in PREDICTIONS.items()}
    r = results(ev=evidence(larger))  # type: ignore[arg-type]
    assert r["RMS-EQ-LOW"].verdict == FAIL
    assert r["RMS-EQ-LOW"].estimate == pytest.approx(sum(relative("ema_coupled")) / 12)


def test_diverged_run_stays_the_worst_value() -> None:
    # A positive divisor keeps the worst value worst: +inf for mode min, -inf for mode max, so a
    # band [0.5, 2] written as `>= 0.5` with mode: max and `<= 2` cannot pass on a diverged run.
    ev = evidence()
    ev.loc[ev.run_id == "ema3xxxxxxxxxxxx", "status"] = "DIVERGED"
    r = results(ev=ev)
    assert r["RMS-EQ-HIGH"].estimate == math.inf and r["RMS-EQ-HIGH"].verdict != PASS
    assert r["RMS-EQ-LOW"].estimate == -math.inf and r["RMS-EQ-LOW"].verdict != PASS


def test_spread_takes_relative_to_on_its_per_run_statistic() -> None:
    text = ADR.replace(
        "statistic: {name: final, relative_to: derived.predicted_weight_rms}\n    mode: max",
        "statistic: {name: spread, over: regularizer.weight_decay, kind: range,\n"
        "                of: {name: final, relative_to: derived.predicted_weight_rms}}\n"
        "    mode: max",
        1,
    )
    stat = parse_adr_text(text).criteria[0].statistic
    assert stat.relative_to == PREDICTED and stat.of == Statistic("final", {"relative_to": PREDICTED})
    assert stat.describe("weight_rms_epoch") == (
        "spread[range] of final(weight_rms_epoch) / derived.predicted_weight_rms"
        " over regularizer.weight_decay"
    )
    ev = evidence()
    lambdas = {"ema1xxxxxxxxxxxx": 1.0, "ema2xxxxxxxxxxxx": 1.0, "ema3xxxxxxxxxxxx": 2.0}
    rows = [param_row(run, "ema_coupled", 0, "regularizer.weight_decay", v) for run, v in lambdas.items()]
    for row, seed in zip(rows, [1, 2, 3], strict=True):
        row["seed"] = seed
    ev = pd.concat([ev, pd.DataFrame(rows)], ignore_index=True)
    r = results(text, ev)["RMS-EQ-LOW"]
    per_run = relative("ema_coupled")
    assert r.estimate == pytest.approx(per_run[2] - (per_run[0] + per_run[1]) / 2)
    assert needed_params(parse_adr_text(text).criteria) == {PREDICTED, "regularizer.weight_decay"}


@pytest.mark.parametrize("name", sorted(RELATIVE_TO_REFUSED))
def test_relative_to_is_refused_where_it_makes_no_sense(name: str) -> None:
    extra = {"time_to_target": ", target: 1", "spread": ", over: regularizer.weight_decay, of: final"}
    text = ADR.replace(
        "{name: final, relative_to: derived.predicted_weight_rms}",
        f"{{name: {name}{extra.get(name, '')}, relative_to: derived.predicted_weight_rms}}",
        1,
    )
    with pytest.raises(AdrError) as err:
        parse_adr_text(text, "adr/0003-ema.md")
    message = str(err.value)
    assert message.startswith("adr/0003-ema.md:17: criteria[0].statistic.relative_to:")
    assert f"relative_to does not apply to {name}: it {RELATIVE_TO_REFUSED[name]}" in message
    assert "valid with: value_at_epoch, mean_over_epochs, best, final, slope" in message


def test_relative_to_must_name_a_numeric_param_adrlab_logs(tmp_path: Path) -> None:
    text = ADR.replace("relative_to: derived.predicted_weight_rms", "relative_to: derived.predicted_rms", 1)
    path = tmp_path / "0003-ema.md"
    path.write_text(text, encoding="utf-8")
    messages = lint([tmp_path])
    errors = [m for m in messages if m.severity == ERROR]
    assert len(errors) == 1 and errors[0].line == 17
    assert "criteria[0].statistic.relative_to: adrlab never logs 'derived.predicted_rms' as a number" in (
        errors[0].message
    )
    assert "valid: " + ", ".join(NUMERIC_PARAMS) in errors[0].message
    for word in ("optimizer.name", "42"):  # a string param, a number: neither names a numeric param
        bad = ADR.replace("relative_to: derived.predicted_weight_rms", f"relative_to: {word}", 1)
        with pytest.raises(AdrError, match=r"criteria\[0\]\.statistic\.relative_to: "):
            parse_adr_text(bad)


def test_relative_to_is_accepted_on_every_value_statistic() -> None:
    accepted = [n for n, (_, optional) in STATISTICS.items() if "relative_to" in optional]
    assert accepted == ["value_at_epoch", "mean_over_epochs", "best", "final", "slope"]
    assert not set(accepted) & set(RELATIVE_TO_REFUSED)
    assert set(accepted) | set(RELATIVE_TO_REFUSED) == set(STATISTICS)
    params = {"value_at_epoch": ", epoch: 2", "mean_over_epochs": ", start: 1, end: 3"}
    for name in accepted:
        text = ADR.replace("{name: final,", f"{{name: {name}{params.get(name, '')},", 1)
        stat = parse_adr_text(text).criteria[0].statistic
        assert stat.relative_to == PREDICTED and stat.describe("m").endswith(") / " + PREDICTED)


def test_every_numeric_param_is_exported_with_the_evidence() -> None:
    # What a criterion may divide by must reach the evidence table: runs.PARAMS or needed_params.
    from adrlab.adr.runs import PARAMS

    adr = parse_adr_text(ADR)
    assert PREDICTED in set(PARAMS) | needed_params(adr.criteria)
    other = ADR.replace("relative_to: derived.predicted_weight_rms", "relative_to: derived.n_train_tokens")
    assert "derived.n_train_tokens" in needed_params(parse_adr_text(other).criteria)


def test_readme_documents_relative_to() -> None:
    text = README.read_text(encoding="utf-8")
    assert "### `relative_to`: a statistic relative to the run's own param" in text
    assert "relative_to: derived.predicted_weight_rms" in text
    for name in RELATIVE_TO_REFUSED:  # each refused statistic is in the table of reasons
        assert re.search(rf"^\|[^|\n]*`{name}`[^|\n]*\| [^|\n]+ \|$", text, re.MULTILINE), name
    for param in NUMERIC_PARAMS:
        assert f"`{param}`" in text, param
    assert "finite value > 0" in text  # what happens to a run without a usable param
