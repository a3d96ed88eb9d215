"""Behaviour fixture: fixed-seed tiny runs on one thread give bit-identical metrics.

The values in tests/fixtures/train_golden.json were recorded before `train()` was split into
stages; any refactor of the training path must reproduce them exactly (==, not approx).
Re-record only for an intended change of behaviour, and say so in the commit:

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.test_train_golden --record
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from adrlab import tracking
from adrlab.config import compose
from tests.conftest import TINY

FIXTURE = Path(__file__).parent / "fixtures" / "train_golden.json"

# Two small runs that between them take every branch of the step: Muon-family and AdamW
# updates, clipping on and off, a decaying lr and a wd schedule, a capped epoch length.
CASES: dict[str, list[str]] = {
    "rmsuon_cosine_dynamic": [
        *TINY,
        "optimizer=rmsuon",
        "lr_schedule=cosine",
        "wd_schedule=dynamic",
        "trainer.epochs=2",
    ],
    "adamw_noclip_capped": [
        *TINY,
        "optimizer=adamw",
        "trainer.grad_clip=0",
        "trainer.max_steps_per_epoch=10",
        "trainer.epochs=2",
    ],
}
EPOCH_KEYS = ("val_loss", "val_ppl", "train_loss_epoch", "weight_rms_epoch")
# Per-step metrics that depend only on the computation (tokens_per_s is a timing).
STEP_KEYS = ("train_loss", "grad_norm", "lr", "wd", "decay", "weight_rms", "update_rms")


def run_case(overrides: list[str]) -> dict[str, Any]:
    torch.set_num_threads(1)
    from adrlab.train import train  # imported late so --record and pytest share one path

    cfg = compose(overrides)
    result = train(cfg)
    history = tracking.metric_history(tracking.tracking_uri(cfg), result.run_id, STEP_KEYS)
    steps = {
        key: [[int(s), float(v)] for s, v in zip(group["step"], group["value"])]
        for key, group in history.groupby("metric")
    }
    return {
        "state": result.state,
        "epochs": [{k: e[k] for k in ("epoch", *EPOCH_KEYS)} for e in result.epochs],
        "steps": steps,
    }


def test_fixed_seed_runs_match_the_recorded_metrics_bit_for_bit(runs_dir) -> None:
    golden = json.loads(FIXTURE.read_text())
    assert sorted(golden) == sorted(CASES)
    for name, overrides in CASES.items():
        got = run_case([*overrides, f"tracking.experiment=golden_{name}"])
        want = golden[name]
        assert got["state"] == want["state"], name
        assert len(got["epochs"]) == len(want["epochs"]) == 2, name
        for g, w in zip(got["epochs"], want["epochs"]):
            for key in ("epoch", *EPOCH_KEYS):
                assert g[key] == w[key], f"{name} epoch {w['epoch']} {key}: {g[key]!r} != {w[key]!r}"
        assert sorted(got["steps"]) == sorted(want["steps"]), name
        for key, points in want["steps"].items():
            assert got["steps"][key] == points, f"{name} per-step {key} differs"


def _record() -> None:
    import os
    import tempfile

    golden = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ADRLAB_RUNS_DIR"] = str(Path(tmp) / "runs")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        for name, overrides in CASES.items():
            golden[name] = run_case([*overrides, f"tracking.experiment=golden_{name}"])
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(golden, indent=1)
    # One line per list of numbers keeps the fixture short and its diffs readable.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    FIXTURE.write_text(text + "\n")
    print(f"recorded {FIXTURE}")


if __name__ == "__main__" and "--record" in sys.argv:
    _record()
