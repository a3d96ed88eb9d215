"""The project root: $ADRLAB_ROOT, else the nearest folder at or above the working directory with
adr/ or sweeps/, else the working directory; built-in configs still come from the package. A
second checkout (or a git worktree) run with this package works on its own files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adrlab.config import compose, conf_dir, project_root_and_source
from adrlab.sweep.spec import sweeps_dir

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADRLAB_ROOT", "ADRLAB_RUNS_DIR", "ADRLAB_REPORTS_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def test_nearest_folder_with_adr_or_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env
) -> None:
    project = tmp_path / "project"
    (project / "sweeps").mkdir(parents=True)
    deep = project / "notes" / "deeper"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert project_root_and_source() == (project.resolve(), "nearest folder holding adr/ or sweeps/")
    assert sweeps_dir() == project.resolve() / "sweeps"


def test_cwd_without_a_project_and_adrlab_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(plain)
    root, source = project_root_and_source()
    assert root == plain.resolve() and source.startswith("working directory")
    (plain / "adr").mkdir()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("ADRLAB_ROOT", str(other))
    assert project_root_and_source() == (other.resolve(), "$ADRLAB_ROOT")  # wins over cwd's adr/
    # The configs are the package's own, whatever the root holds.
    assert conf_dir() == REPO / "conf"
    assert compose(["optimizer=adamw"]).optimizer.name == "adamw"


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for sub in ("adr", "reports", "sweeps")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_a_second_checkout_reads_and_writes_its_own_files(tmp_path: Path, clean_env) -> None:
    """This package (as if installed from the first checkout) run inside another checkout."""
    second = tmp_path / "second-checkout"
    shutil.copytree(REPO / "sweeps", second / "sweeps")
    (second / "adr").mkdir()
    text = (REPO / "adr" / "0002-v-rmsuon-sqrt-v-penalty.md").read_text(encoding="utf-8")
    adr = second / "adr" / "0077-only-here.md"
    adr.write_text(text.replace("ADR-0002", "ADR-0077"), encoding="utf-8")
    before = snapshot(REPO)
    env = {**os.environ, "PYTHONPATH": str(SRC), "ADRLAB_QUIET": "1"}
    env = {k: v for k, v in env.items() if k not in ("ADRLAB_ROOT", "ADRLAB_RUNS_DIR", "ADRLAB_REPORTS_DIR")}

    def adrlab(*argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "adrlab", *argv]
        return subprocess.run(cmd, cwd=second / "adr", capture_output=True, text=True, env=env)

    listed = adrlab("adr", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ADR-0077" in listed.stdout and "ADR-0002" not in listed.stdout
    report = adrlab("report")  # judges every ADR of this checkout and writes the index
    assert report.returncode == 0, report.stderr
    assert f"project root {second.resolve()}" in report.stderr
    index = second / "reports" / "README.md"
    assert index.is_file() and "0077" in index.read_text(encoding="utf-8"), report.stdout
    assert (second / "runs" / "mlflow.db").is_file()  # its own store too
    assert snapshot(REPO) == before  # the package's checkout is not touched
