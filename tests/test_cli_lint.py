"""`adrlab adr lint` catches what would break an ADR's runs or report (arms that do not compose at
some scale, numbers that disagree or repeat), with file:line; `adrlab report` and `adrlab adr run`
refuse such an ADR before writing anything."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from adrlab.adr.lint import ERROR, lint
from adrlab.cli import main

REPO = Path(__file__).resolve().parents[1]

ADR = """\
---
title: "ADR-0042: arms to compose"
status: "Proposed"
experiments:
  smoke:
    seeds: [1]
    overrides: ["scale=smoke"]
    arms:
      good: ["experiment=v_rmsuon"]
      {smoke_arm}
  paper:
    seeds: [42]
    overrides: ["scale=paper", "data=wikitext2"]
    arms:
      good: ["experiment=v_rmsuon"]
      {paper_arm}
      swept: {{sweep: lambda_schedule, overrides: {sweep_overrides}}}
criteria:
  - id: PRIMARY
    claim: "better"
    role: primary
    arm: good
    metric: val_ppl
    statistic: best
    compare: "<"
    threshold: 100
---

Body.
"""


def project(tmp_path: Path, name: str = "0042-arms.md", **arms: str) -> Path:
    """A project folder (adr/ + the repository's sweeps/) holding one ADR."""
    (tmp_path / "adr").mkdir(exist_ok=True)
    if not (tmp_path / "sweeps").exists():
        shutil.copytree(REPO / "sweeps", tmp_path / "sweeps")
    values = {"smoke_arm": 'other: ["optimizer=adamw"]', "paper_arm": "", "sweep_overrides": "[]"}
    path = tmp_path / "adr" / name
    path.write_text(ADR.format(**{**values, **arms}), encoding="utf-8")
    return path


def errors_of(paths: list[Path]) -> list[tuple[str, int | None, str]]:
    return [(Path(m.path).name, m.line, m.message) for m in lint(paths) if m.severity == ERROR]


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_valid_adr_and_the_repositorys_adrs_pass(tmp_path: Path) -> None:
    assert errors_of([project(tmp_path)]) == []
    assert [m for m in lint([REPO / "adr"]) if m.severity == ERROR] == []


@pytest.mark.parametrize(
    ("arms", "needle", "message"),
    [
        ({"smoke_arm": 'nope: ["experiment=nope_preset"]'}, "nope:", "experiment=nope_preset is not a known"),
        ({"smoke_arm": 'typo: ["optimizer.lrr=0.1"]'}, "typo:", "optimizer.lrr is not a setting"),
        ({"smoke_arm": 'neg: ["optimizer.lr=-1"]'}, "neg:", "optimizer.lr=-1.0 must be > 0"),
        (
            {"smoke_arm": 'twice: ["experiment=rmsuon_wd0", "experiment=v_rmsuon"]'},
            "twice:",
            "experiment given twice: experiment=rmsuon_wd0 and experiment=v_rmsuon",
        ),
        # Only at the paper scale: the arm is fine at smoke, the scale-wide data=wikitext2 repeats.
        (
            {"paper_arm": 'dup: ["data=synthetic"]'},
            "dup:",
            "data given twice: data=wikitext2 and data=synthetic",
        ),
        ({"sweep_overrides": '["optimizer.nope=1"]'}, "swept:", "sweep lambda_schedule with overrides"),
    ],
)
def test_arms_that_do_not_compose_are_errors_at_their_line(
    tmp_path: Path, arms: dict[str, str], needle: str, message: str
) -> None:
    path = project(tmp_path, **arms)
    errors = errors_of([path])
    assert len(errors) == 1, errors
    name, line, text = errors[0]
    assert (name, line) == (path.name, line_of(path, needle))
    assert message in text
    scale = "paper" if "paper_arm" in arms or "sweep_overrides" in arms else "smoke"
    assert text.startswith(f"experiments.{scale}.arms.")


def test_file_and_title_numbers_must_agree_and_be_unique(tmp_path: Path) -> None:
    wrong = project(tmp_path, name="0914-wrong.md")  # title says ADR-0042
    errors = errors_of([wrong])
    assert errors == [
        (
            "0914-wrong.md",
            2,
            "the file name says ADR 0914 but the title says ADR-0042; make them agree",
        )
    ]
    wrong.unlink()
    first = project(tmp_path, name="0042-first.md")
    second = project(tmp_path, name="0042-second.md")
    # Linting one file still checks its folder: the duplicate is named either way.
    for linted in ([first], [tmp_path / "adr"]):
        dup = [e for e in errors_of(linted) if "also claimed" in e[2]]
        assert dup and all(e[2].startswith("ADR number 0042 is also claimed by") for e in dup)
        assert "reports/adr-0042/" in dup[0][2]
    assert {e[0] for e in errors_of([tmp_path / "adr"])} == {first.name, second.name}


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_report_and_adr_run_refuse_an_adr_lint_rejects_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    path = project(root, smoke_arm='nope: ["experiment=nope_preset"]')
    monkeypatch.chdir(root)
    for name in ("ADRLAB_ROOT", "ADRLAB_RUNS_DIR", "ADRLAB_REPORTS_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    before = snapshot(root)
    for argv in (["report", "--adr", "0042"], ["report"], ["report", "--check"], ["adr", "run", "0042"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{path}:{line_of(path, 'nope:')}: error:" in err
        assert "refused" in err and "nothing was written" in err
    assert snapshot(root) == before  # no reports/, no runs/, the ADR byte-identical


def test_lint_takes_adr_ids_and_names_the_known_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    path = project(root, smoke_arm='nope: ["experiment=nope_preset"]')
    monkeypatch.setenv("ADRLAB_ROOT", str(root))
    for ref in ("0042", "42", "ADR-0042"):  # an id finds the file, so its errors carry file:line
        assert errors_of([Path(ref)]) == errors_of([path]) != []
    missing = [m for m in lint(["0099"]) if m.severity == ERROR]
    assert len(missing) == 1 and "no ADR '0099' in adr/; known: 0042-arms" in missing[0].message
