"""A tiny ADR end to end: runs through the sweep workers, verdicts written back, snapshot check."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from adrlab import tracking
from adrlab.adr.document import parse_adr
from adrlab.adr.report import run_report
from adrlab.adr.runs import run_experiments, stored_runs
from tests.conftest import TINY

ADR = """---
title: "ADR-0042: 小实验 (tiny end-to-end check)"
status: "Proposed"
date: "2026-11-22"
authors: "tests"
tags: ["test"]
supersedes: ""
superseded_by: ""
experiments:
  smoke:
    seeds: [1, 2]
    overrides: [{overrides}]
    arms:
      decayed: ["optimizer=adamw", "regularizer=decoupled", "regularizer.weight_decay=0.1"]
      plain: ["optimizer=adamw", "regularizer=none"]
criteria:
  - id: FLAG-1
    claim: "衰减不让最终 PPL 变差太多"
    role: primary
    arm: decayed
    baseline: plain
    relation: ratio
    metric: val_ppl
    statistic: final
    compare: "<="
    threshold: 1.5
  - id: FLAG-2
    claim: "an arm nobody ran"
    role: secondary
    arm: decayed
    metric: val_ppl
    statistic: {{name: value_at_epoch, epoch: 1}}
    compare: "<"
    threshold: 1.0e9
---

# ADR-0042: 小实验

## 背景 (Context)

Text outside the markers must survive byte for byte.
"""


@pytest.fixture
def adr_file(tmp_path: Path) -> Path:
    # lr 0.01: the tiny model learns (val PPL ~5 of a uniform 64), so the learning guard is quiet
    overrides = ", ".join(f'"{o}"' for o in [*TINY, "trainer.epochs=2", "optimizer.lr=0.01"])
    path = tmp_path / "0042-tiny.md"
    path.write_text(ADR.format(overrides=overrides))
    return path


def test_tiny_adr_end_to_end(adr_file: Path, runs_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ADRLAB_UI_URL", raising=False)  # report links use the default ui address
    before = adr_file.read_text()
    ran = run_experiments(str(adr_file), workers=2)
    assert sorted(ran["jobs"]) == ["decayed-s1", "decayed-s2", "plain-s1", "plain-s2"]
    adr = parse_adr(adr_file)
    runs = stored_runs(adr, "smoke", tracking.tracking_uri(None))
    assert sorted(zip(runs["arm"], runs["seed"])) == [
        ("decayed", 1),
        ("decayed", 2),
        ("plain", 1),
        ("plain", 2),
    ]
    # In mlflow ui: each run named by ADR, arm and seed, described by the ADR's title.
    named = runs.set_index(["arm", "seed"])
    assert named.loc[("plain", 2), "tags.mlflow.runName"] == "0042 plain s2"
    note = named.loc[("decayed", 1), "tags.mlflow.note.content"]
    assert note.startswith("ADR-0042: 小实验") and "arm `decayed` · seed 1 · scale smoke" in note
    assert run_experiments(str(adr_file), workers=2)["jobs"] == []  # nothing missing any more

    assert run_report(str(adr_file)) == 0
    text = adr_file.read_text()
    assert text.startswith(before)  # everything before the appended block is untouched
    assert "<!-- adrlab:verdict:begin -->" in text and "## 自动验证 (Automated Verification)" in text
    assert "| FLAG-1 | primary |" in text and "**PASS**" in text
    snapshot = tmp_path / "reports" / "adr-0042" / "runs-smoke.csv"
    evidence = pd.read_csv(snapshot)
    assert set(evidence["arm"]) == {"decayed", "plain"}
    assert {"epoch", "step", "param"} <= set(evidence["kind"])
    # scale and provenance travel with every row; the vocabulary feeds the learning guard
    assert set(evidence["scale"]) == {"smoke"}
    assert "unknown" not in set(evidence["git_sha"]) and evidence["config_hash"].str.len().min() > 0
    assert "data.vocab_size" in set(evidence["metric"])
    assert (tmp_path / "reports" / "adr-0042" / "forest.png").is_file()
    assert (tmp_path / "reports" / "adr-0042" / "val_ppl.png").is_file()
    readme = (tmp_path / "reports" / "adr-0042" / "README.md").read_text()
    links = re.findall(
        r"\[s[12]\]\(http://127\.0\.0\.1:5000/#/experiments/\d+/runs/(\w+)\?workflowType=", readme
    )
    assert "### Runs in MLflow" in readme and sorted(links) == sorted(runs["run_id"])

    mtime = adr_file.stat().st_mtime_ns
    assert run_report(str(adr_file)) == 0  # idempotent
    assert adr_file.stat().st_mtime_ns == mtime
    assert run_report(str(adr_file), check=True) == 0

    # A fresh clone: no tracking store, only the committed snapshot.
    monkeypatch.setenv("ADRLAB_RUNS_DIR", str(tmp_path / "empty-store"))
    assert run_report(str(adr_file), check=True) == 0
    assert run_report(str(adr_file)) == 0
    assert adr_file.read_text() == text  # kept, re-derived identically

    # A hand edit inside the block fails the check and is refused without --force.
    edited = text.replace("**PASS**", "**FAIL**", 1)
    adr_file.write_text(edited)
    assert run_report(str(adr_file), check=True) == 1
    assert run_report(str(adr_file)) == 1
    assert adr_file.read_text() == edited
    assert run_report(str(adr_file), force=True) == 0
    assert adr_file.read_text() == text


def test_report_without_any_runs_keeps_a_committed_block(adr_file: Path, runs_dir: Path) -> None:
    assert run_report(str(adr_file)) == 0  # first write: NO DATA for everything
    text = adr_file.read_text()
    assert "NO DATA" in text and "decayed seed 1" in text
    assert run_report(str(adr_file), check=True) == 0


def test_a_diverged_run_carries_its_planned_epochs_into_the_evidence(tmp_path: Path, runs_dir: Path) -> None:
    """verdict.PLANNED_EPOCHS lets a criterion read a diverged run as worst up to the end it
    never reached: the export must carry trainer.epochs for such runs (and, to keep every other
    snapshot as it was, only for them)."""
    from adrlab.adr.runs import collect_evidence
    from adrlab.adr.verdict import PLANNED_EPOCHS

    overrides = ", ".join(f'"{o}"' for o in [*TINY, "trainer.epochs=2", "optimizer.lr=0.01"])
    text = ADR.format(overrides=overrides).replace("seeds: [1, 2]", "seeds: [1]")
    text = text.replace(
        '"regularizer.weight_decay=0.1"]', '"regularizer.weight_decay=0.1", "trainer.divergence_loss=1.0"]'
    )
    path = tmp_path / "0042-tiny.md"
    path.write_text(text)
    run_experiments(str(path), workers=1)
    evidence = collect_evidence(parse_adr(path), "smoke", tracking.tracking_uri(None))
    status = evidence.drop_duplicates("run_id").set_index("arm")["status"]
    assert (status["decayed"], status["plain"]) == ("DIVERGED", "FINISHED")
    planned = evidence[(evidence["kind"] == "param") & (evidence["metric"] == PLANNED_EPOCHS)]
    assert list(planned["arm"]) == ["decayed"] and list(planned["value"]) == [2.0]
