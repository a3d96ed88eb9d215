"""Shared fixtures: every test gets its own runs folder (MLflow store, caches, journals)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests share 2 cores with each other and with whatever else runs: one thread each.
torch.set_num_threads(1)
os.environ.setdefault("ADRLAB_WORKERS", "2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"

# A model and data small enough that a whole run takes a second or two.
TINY = [
    "model.d_model=32",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.head_dim=16",
    "model.d_ff=64",
    "data.vocab_size=64",
    "data.train_tokens=4096",
    "data.val_tokens=1024",
    "data.seq_len=32",
    "trainer.epochs=2",
    "trainer.batch_size=8",
    "trainer.log_every=2",
    "trainer.progress=off",
    "trainer.threads=1",
]


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("ADRLAB_RUNS_DIR", str(path))
    monkeypatch.setenv("ADRLAB_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


# An ADR with one `smoke` experiment on seeds 1-3, laid out as adr/README.md writes one.
SMOKE_ADR = """\
---
title: "{title}"
status: "Proposed"
experiments:
  smoke:
    seeds: [1, 2, 3]
    overrides: ["scale=smoke"]
    arms:
{arms}criteria:
{criteria}---
{body}"""


def smoke_adr(title: str, arms: dict[str, str], criteria: list[str], body: str = "") -> str:
    """SMOKE_ADR filled in: ``arms`` maps each arm to its YAML (``'["optimizer=adamw"]'``),
    ``criteria`` come from `criterion`, ``body`` follows the front matter."""
    arm_lines = "".join(f"      {name}: {yaml}\n" for name, yaml in arms.items())
    return SMOKE_ADR.format(title=title, arms=arm_lines, criteria="".join(criteria), body=body)


def criterion(
    id_: str,
    claim: str,
    /,
    *,
    arm: str,
    metric: str,
    statistic: str,
    compare: str,
    threshold: float,
    role: str = "primary",
    baseline: str | None = None,
    mode: str | None = None,
) -> str:
    """One entry of an ADR's `criteria:` list, its fields in adr/README.md's order; ``statistic``
    is YAML as written (``final``, ``{name: slope, start: 1}``); a baseline comes with
    ``relation: ratio``."""
    fields = {
        "id": id_,
        "claim": f'"{claim}"',
        "role": role,
        "arm": arm,
        "baseline": baseline,
        "relation": "ratio" if baseline else None,
        "metric": metric,
        "statistic": statistic,
        "mode": mode,
        "compare": f'"{compare}"',
        "threshold": threshold,
    }
    lines = [f"{key}: {value}" for key, value in fields.items() if value is not None]
    return "  - " + "\n    ".join(lines) + "\n"
