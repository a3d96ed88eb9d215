"""ADR parsing: schema validation with file:line errors, and line-level front matter edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from adrlab.adr.document import AdrError, Statistic, parse_adr, parse_adr_text, set_front_matter_value

ADR = """\
---
title: "ADR-0002: V-RMSuon"
status: "Proposed"  # the human decision
date: "2025-11-30"
authors: "Ω Researcher"
tags: ["optimizer", "regularization"]
supersedes: ""
superseded_by: ""
experiments:
  smoke:
    seeds: [1, 2]
    overrides: ["scale=smoke"]
    arms:
      rmsuon_wd01: ["optimizer=rmsuon", "regularizer=decoupled", "regularizer.weight_decay=0.1"]
      v_rmsuon: ["experiment=v_rmsuon"]
      v_rmsuon_lambda: {sweep: v_rmsuon_lambda}
  paper:
    seeds: [42]
    overrides: ["scale=paper", "data=wikitext2"]
    arms:
      rmsuon_wd01: ["optimizer=rmsuon"]
      v_rmsuon: ["experiment=v_rmsuon"]
criteria:
  - id: FLAG-1
    claim: "V-RMSuon 在 10 个 epoch 内验证 PPL 不出现急剧上升"
    role: flag
    arm: v_rmsuon
    metric: val_ppl
    statistic: final_over_best
    compare: "<="
    threshold: 1.05
  - id: FLAG-2
    claim: "epoch-1 PPL at most 10% above RMSuon wd=0.1"
    role: flag
    arm: v_rmsuon
    baseline: rmsuon_wd01
    relation: ratio
    metric: val_ppl
    statistic: {name: value_at_epoch, epoch: 1}
    compare: "<="
    threshold: 1.1
    min_seeds: 1
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
  - id: FLAG-4
    claim: "lambda matters little"
    role: flag
    arm: v_rmsuon_lambda
    metric: val_ppl
    statistic: {name: spread, over: regularizer.weight_decay, of: best, kind: ratio}
    compare: "<"
    threshold: 1.1
---

# ADR-0002: V-RMSuon

## 背景 (Context)

Text.
"""


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_parse_valid_adr() -> None:
    adr = parse_adr_text(ADR, "adr/0002-v-rmsuon.md")
    assert adr.title == "ADR-0002: V-RMSuon"
    assert adr.status == "Proposed"
    assert adr.auto_status is False
    assert adr.number == "0002"
    assert set(adr.experiments) == {"smoke", "paper"}
    smoke = adr.experiments["smoke"]
    assert smoke.seeds == (1, 2)
    assert smoke.arm_overrides("v_rmsuon") == ["scale=smoke", "experiment=v_rmsuon"]
    assert smoke.arms["v_rmsuon_lambda"].sweep == "v_rmsuon_lambda"
    assert smoke.arms["v_rmsuon_lambda"].overrides == ()
    assert [c.id for c in adr.criteria] == ["FLAG-1", "FLAG-2", "PRIMARY", "FLAG-4"]
    flag1, flag2, primary, flag4 = adr.criteria
    assert flag1.statistic == Statistic("final_over_best")
    assert flag1.min_seeds == 2 and flag1.mode == "min" and flag1.baseline is None
    assert flag2.statistic.name == "value_at_epoch" and flag2.statistic.params == {"epoch": 1}
    assert flag2.min_seeds == 1
    assert primary.arms == ("v_rmsuon", "rmsuon_wd01") and primary.relation == "ratio"
    assert primary.describe_threshold() == "final(val_ppl): v_rmsuon / rmsuon_wd01 < 0.98"
    assert flag4.statistic.of == Statistic("best")
    assert flag4.statistic.params == {"over": "regularizer.weight_decay", "kind": "ratio"}
    assert flag1.line == line_of(ADR, "id: FLAG-1")
    assert adr.body_line == line_of(ADR, "# ADR-0002") - 1
    assert adr.front_matter["tags"] == ["optimizer", "regularization"]


def test_parse_adr_reads_file_and_writes_nothing(tmp_path: Path) -> None:
    p = tmp_path / "0002-v-rmsuon.md"
    p.write_text(ADR, encoding="utf-8")
    before = p.read_bytes()
    adr = parse_adr(p)
    assert adr.text == ADR and adr.path == p
    assert p.read_bytes() == before


BAD = [
    # (old text, new text, a unique fragment of the offending line, message fragment)
    (
        "statistic: final\n",
        "statistic: bestt\n",
        "statistic: bestt",
        "criteria[2].statistic: unknown statistic 'bestt'; valid: value_at_epoch, mean_over_epochs",
    ),
    (
        'compare: "<"\n',
        'compare: "=<"\n',
        'compare: "=<"',
        "criteria[2].compare: unknown compare '=<'; valid: <",
    ),
    (
        "arm: v_rmsuon\n    metric",
        "arm: v_rmsun\n    metric",
        "arm: v_rmsun",
        "criteria[0].arm: unknown arm 'v_rmsun'",
    ),
    (
        "baseline: rmsuon_wd01\n    relation: ratio\n    metric: val_ppl\n    statistic: final",
        "baseline: rmsuon_wd1\n    relation: ratio\n    metric: val_ppl\n    statistic: final",
        "baseline: rmsuon_wd1",
        "criteria[2].baseline: unknown arm 'rmsuon_wd1'",
    ),
    (
        "    baseline: rmsuon_wd01\n    relation: ratio\n    metric: val_ppl\n    statistic: {",
        "    relation: ratio\n    metric: val_ppl\n    statistic: {",
        "relation: ratio",
        "criteria[1].relation: needs a 'baseline' arm",
    ),
    (
        'superseded_by: ""\n',
        'superseded_by: ""\ndeciders: [me]\n',
        "deciders:",
        "deciders: unknown key; valid: title",
    ),
    (
        "    threshold: 1.05\n",
        "    threshold: 1.05\n    treshold: 2\n",
        "treshold",
        "criteria[0].treshold: unknown key",
    ),
    ("threshold: 1.05", "threshold: high", "threshold: high", "criteria[0].threshold: expected a number"),
    (
        'status: "Proposed"',
        'status: "Maybe"',
        'status: "Maybe"',
        "status: unknown status 'Maybe'; valid: Proposed",
    ),
    (
        "seeds: [1, 2]",
        "seeds: [1, two]",
        "seeds: [1, two]",
        "experiments.smoke.seeds[1]: expected an integer",
    ),
    ("seeds: [1, 2]", "seeds: [1, 1]", "seeds: [1, 1]", "duplicate seed 1"),
    ("role: flag\n", "role: flagg\n", "role: flagg", "criteria[0].role: unknown role 'flagg'"),
    ("{name: value_at_epoch, epoch: 1}", "{name: value_at_epoch}", "{name: value_at_epoch}", "needs 'epoch'"),
    (
        "{name: value_at_epoch, epoch: 1}",
        "{name: value_at_epoch, epoch: 1, epochs: 2}",
        "epochs: 2",
        "criteria[1].statistic.epochs: unknown parameter for value_at_epoch",
    ),
    ("{name: value_at_epoch, epoch: 1}", "{name: value_at_epoch, epoch: 0}", "epoch: 0", "must be >= 1"),
    (
        "of: best, kind",
        "of: {name: spread, over: a, of: best}, kind",
        "of: {name: spread",
        "criteria[3].statistic.of: unknown statistic 'spread'",
    ),
    ("kind: ratio}", "kind: ratioo}", "kind: ratioo", "unknown kind 'ratioo'; valid: ratio, range"),
    ("statistic: final_over_best", "statistic: [final]", "statistic: [final]", "expected a statistic name"),
    (
        "v_rmsuon_lambda: {sweep: v_rmsuon_lambda}",
        "v_rmsuon_lambda: {sweeps: v_rmsuon_lambda}",
        "sweeps:",
        "experiments.smoke.arms.v_rmsuon_lambda.sweeps: unknown key",
    ),
    (
        'v_rmsuon: ["experiment=v_rmsuon"]\n      v_rmsuon_lambda',
        "v_rmsuon: 3\n      v_rmsuon_lambda",
        "v_rmsuon: 3",
        "expected a list of Hydra overrides or {sweep: NAME}",
    ),
    ('date: "2025-11-30"', 'date: "30.11.2025"', "date:", "date: expected YYYY-MM-DD"),
    ("min_seeds: 1", "min_seeds: 0", "min_seeds: 0", "criteria[1].min_seeds: must be >= 1"),
    ("    threshold: 1.05\n", "    threshold: 1.05\n    mode: maximum\n", "mode: maximum", "unknown mode"),
]


@pytest.mark.parametrize(("old", "new", "at", "message"), BAD)
def test_schema_errors_name_file_and_line(old: str, new: str, at: str, message: str) -> None:
    assert old in ADR, old
    text = ADR.replace(old, new, 1)
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "adr/0002-v-rmsuon.md")
    err = info.value
    assert err.line == line_of(text, at), str(err)
    assert message in err.message, str(err)
    assert str(err) == f"adr/0002-v-rmsuon.md:{err.line}: {err.message}"


def test_duplicate_criterion_id() -> None:
    text = ADR.replace("id: FLAG-2", "id: FLAG-1")
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "a.md")
    assert info.value.line == line_of(text, 'claim: "epoch-1') - 1
    assert "criteria[1].id: duplicate id 'FLAG-1' (first in criteria[0])" in info.value.message


def test_error_example_from_the_brief() -> None:
    text = ADR.replace("statistic: final\n", "statistic: bestt\n")
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "adr/0002-v-rmsuon.md")
    line = line_of(text, "statistic: bestt")
    prefix = f"adr/0002-v-rmsuon.md:{line}: criteria[2].statistic: unknown statistic 'bestt'; valid: "
    assert str(info.value).startswith(prefix + "value_at_epoch, ")


def test_missing_required_key_points_at_the_criterion() -> None:
    text = ADR.replace('    compare: "<"\n    threshold: 0.98\n', "    threshold: 0.98\n")
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "x.md")
    assert info.value.line == line_of(text, "id: PRIMARY")
    assert "criteria[2]: missing required key 'compare'" in info.value.message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# no front matter\n", 1, "missing front matter"),
        ("---\ntitle: x\nstatus: Proposed\n", 1, "not closed"),
        ("---\ntitle: [x\nstatus: Proposed\n---\n", 3, "not valid YAML"),
        ("---\ntitle: x\ntitle: y\nstatus: Proposed\n---\n", 3, "not valid YAML"),
        ("---\n- a\n- b\n---\n", 2, "must be a YAML mapping"),
        ("---\ntitle: x\n---\n", 2, "missing required key 'status'"),
    ],
)
def test_malformed_front_matter(text: str, line: int, message: str) -> None:
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "a.md")
    assert info.value.line == line
    assert message in info.value.message


def test_unquoted_comparison_gets_a_hint() -> None:
    text = ADR.replace('compare: "<="\n    threshold: 1.05', "compare: >=\n    threshold: 1.05")
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "a.md")
    assert 'quote comparison operators, e.g. compare: ">="' in info.value.message


def test_criteria_need_declared_arms() -> None:
    start = ADR.index("experiments:")
    text = ADR[:start] + ADR[ADR.index("criteria:") :]
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "a.md")
    assert "unknown arm 'v_rmsuon'; valid: none declared under experiments" in info.value.message


def test_human_only_adr_parses() -> None:
    text = '---\ntitle: "ADR-0001: x"\nstatus: "Rejected"\nauthors: "me"\ndate: 2025-11-30\n---\n# body\n'
    adr = parse_adr_text(text, "0001.md")
    assert adr.criteria == [] and adr.experiments == {} and adr.number == "0001"


def test_crlf_adr_parses_with_same_lines() -> None:
    text = ADR.replace("statistic: final\n", "statistic: bestt\n").replace("\n", "\r\n")
    with pytest.raises(AdrError) as info:
        parse_adr_text(text, "a.md")
    assert info.value.line == line_of(text, "statistic: bestt")
    assert parse_adr_text(ADR.replace("\n", "\r\n"), "a.md").criteria[0].id == "FLAG-1"


# --------------------------------------------------------------------------- set_front_matter_value


def changed_lines(a: str, b: str) -> list[int]:
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    assert len(la) == len(lb)
    return [i for i, (x, y) in enumerate(zip(la, lb)) if x != y]


def test_set_value_keeps_double_quotes_and_comment() -> None:
    out = set_front_matter_value(ADR, "status", "Rejected")
    assert 'status: "Rejected"  # the human decision\n' in out
    assert changed_lines(ADR, out) == [line_of(ADR, "status:") - 1]
    assert parse_adr_text(out, "a.md").status == "Rejected"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("status: 'Proposed'\n", "status: 'Accepted'\n"),
        ("status: Proposed\n", "status: Accepted\n"),
        ("status: Proposed # keep me\n", "status: Accepted # keep me\n"),
        ('status:   "Proposed"    # wide comment\n', 'status:   "Accepted"    # wide comment\n'),
    ],
)
def test_set_value_keeps_style(line: str, expected: str) -> None:
    text = f"---\ntitle: t\n{line}date: 2025-11-30\n---\nbody\n"
    out = set_front_matter_value(text, "status", "Accepted")
    assert out == text.replace(line, expected)


def test_set_value_keeps_crlf_and_order() -> None:
    text = ADR.replace("\n", "\r\n")
    out = set_front_matter_value(text, "status", "Accepted")
    assert out == text.replace('status: "Proposed"', 'status: "Accepted"')
    assert out.count("\r\n") == text.count("\r\n")


def test_set_value_escapes_and_quotes_when_needed() -> None:
    text = "---\ntitle: t\nstatus: Proposed\n---\n"
    assert "title: 'a: b'" in set_front_matter_value(
        "---\ntitle: 'x'\nstatus: Proposed\n---\n", "title", "a: b"
    )
    assert 'title: "a: b"' in set_front_matter_value(text, "title", "a: b")
    assert 'title: "say \\"hi\\""' in set_front_matter_value(text, "title", 'say "hi"')
    assert 'title: "true"' in set_front_matter_value(text, "title", "true")


def test_set_value_refuses_missing_or_nested_keys() -> None:
    with pytest.raises(AdrError, match="no top-level key 'auto_status'"):
        set_front_matter_value(ADR, "auto_status", "true")
    with pytest.raises(AdrError, match="no top-level key 'seeds'"):
        set_front_matter_value(ADR, "seeds", "3")  # only nested under experiments
    with pytest.raises(AdrError, match="not a one-line scalar"):
        set_front_matter_value(ADR, "experiments", "x")
