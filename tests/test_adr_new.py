"""`adrlab adr new`: numbering, the seeds' form, lint-clean output whose arms compose."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from adrlab.adr.document import parse_adr
from adrlab.adr.lint import lint
from adrlab.adr.scaffold import next_number, slugify
from adrlab.adr.workspace import adr_metric_names, compose_arm
from adrlab.cli import main

LION = Path(__file__).resolve().parents[1] / "examples" / "lion"


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config-dir and ADR folders extend the environment and sys.path: undo that per test."""
    monkeypatch.setenv("ADRLAB_CONFIG_DIRS", "")  # restored (removed) after the test
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_new_adr_is_numbered_lint_clean_and_composes(tmp_path: Path, capsys) -> None:
    assert main(["adr", "new", "A first idea", "--root", str(tmp_path)]) == 0
    assert main(["adr", "new", "第二个想法 (second idea)", "--root", str(tmp_path)]) == 0
    files = sorted(p.name for p in (tmp_path / "adr").glob("*.md"))
    assert files == ["0001-a-first-idea.md", "0002-second-idea.md"]
    assert lint([tmp_path / "adr"]) == []  # no error, no warning
    adr = parse_adr(tmp_path / "adr" / files[1])
    assert adr.title == "ADR-0002: 第二个想法 (second idea)" and adr.status == "Proposed"
    smoke = adr.experiments["smoke"]
    assert len(smoke.seeds) >= 5 and set(smoke.arms) == {"candidate", "control"}
    assert [c.id for c in adr.criteria] == ["PRIMARY"] and adr.criteria[0].baseline == "control"
    for heading in ("## 背景 (Context)", "## 决策 (Decision)", "## 后果 (Consequences)"):
        assert heading in adr.text
    assert compose_arm(adr, "smoke", "candidate").optimizer.name == "rmsuon"
    assert compose_arm(adr, "smoke", "control").optimizer.name == "adamw"


def test_new_adr_records_its_own_config_folder(tmp_path: Path, monkeypatch) -> None:
    shutil.copytree(LION, tmp_path / "lion")
    monkeypatch.delitem(sys.modules, "lion", raising=False)
    args = ["adr", "new", "Lion", "--root", str(tmp_path), "--arm", "optimizer=lion regularizer=none"]
    args += ["--config-dir", str(tmp_path / "lion" / "conf"), "--python-path", str(tmp_path / "lion")]
    assert main(args) == 0
    adr = parse_adr(next((tmp_path / "adr").glob("0001-*.md")))
    assert adr.config_dirs == ("lion/conf",) and adr.python_paths == ("lion",)
    assert lint([adr.path]) == []
    assert compose_arm(adr, "smoke", "candidate").optimizer._target_ == "lion.Lion"
    assert adr_metric_names(adr) == {"lion_sign_flip"}
    assert "lion" not in sys.modules  # composing and reading metric names imported nothing


def test_new_adr_refuses_bad_input(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["adr", "new", "x", "--root", str(tmp_path), "--config-dir", "/nonexistent-dir"])
    assert main(["adr", "new", "x", "--root", str(tmp_path), "--arm", "optimizer=nope"]) == 2
    assert "arm candidate does not compose" in capsys.readouterr().err
    assert not list((tmp_path / "adr").glob("*.md"))  # nothing written


def test_numbering_and_slugs(tmp_path: Path) -> None:
    assert next_number(tmp_path) == 1
    (tmp_path / "0007-x.md").write_text("")
    (tmp_path / "README.md").write_text("")
    assert next_number(tmp_path) == 8
    assert slugify("Lion vs. AdamW: 2× faster?") == "lion-vs-adamw-2-faster"
    assert slugify("只有中文") == "adr"


def test_lion_example_adr_lints_without_importing_lion(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "lion", raising=False)
    repo = LION.parents[1]
    adr = parse_adr(repo / "adr" / "0006-lion-vs-adamw-rmsuon.md")
    assert lint([adr.path]) == []
    assert {compose_arm(adr, "smoke", arm).optimizer.name for arm in adr.experiments["smoke"].arms} == {
        "lion",
        "adamw",
        "rmsuon",
    }
    assert adr_metric_names(adr) == {"lion_sign_flip"}
    assert "lion" not in sys.modules
