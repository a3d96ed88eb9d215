"""Behaviour fixture: fixed-seed tiny runs on one thread give bit-identical metrics.

The values in tests/fixtures/train_golden.json were first recorded before `train()` was split
into stages; any refactor of the training path must reproduce them exactly (==, not approx).
Bit-identical holds on one kind of machine only: torch's kernels and MKL pick code paths by the
CPU's vector units, and the same code gives results that differ in the 7th digit on another CPU.
So each recording is keyed by the machine (`machine()`): where this machine has one the check
is exact; elsewhere it compares with the first recording within CROSS_MACHINE_REL and warns.
Re-record only for an intended change of behaviour (say so in the commit), or to add this kind
of machine (that adds its key and leaves the others):

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.test_train_golden --record
"""

from __future__ import annotations

import json
import platform
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
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


# Seen between two CPUs for the same code and torch: 4.4e-7 after these two epochs.
CROSS_MACHINE_REL = 1e-5


def machine() -> str:
    """What decides the float results of the same code: torch's build, the CPU's vendor and the
    vector units its kernels and MKL dispatch on."""
    vendor, units = "", []
    try:
        with open("/proc/cpuinfo") as fh:
            info = dict(line.split(":", 1) for line in fh if ":" in line and not line.startswith("processor"))
        vendor = info.get("vendor_id\t", "").strip()
        units = sorted(f for f in info.get("flags\t\t", "").split() if f.startswith(("avx", "amx", "fma")))
    except OSError:  # not Linux: the platform names what it can
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch {torch.__version__}, {platform.machine()} {vendor} {capability}: {' '.join(units)}".strip()


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
    recordings = json.loads(FIXTURE.read_text())
    golden = recordings.get(machine())
    if golden is None:
        warnings.warn(
            f"no recording for this machine ({machine()}): compared within a relative "
            f"{CROSS_MACHINE_REL:g}, not bit for bit (record it with --record)",
            stacklevel=1,
        )
    same = (
        (lambda a, b: a == b)
        if golden is not None
        else (lambda a, b: a == pytest.approx(b, rel=CROSS_MACHINE_REL))
    )
    golden = golden if golden is not None else next(iter(recordings.values()))
    assert sorted(golden) == sorted(CASES)
    for name, overrides in CASES.items():
        got = run_case([*overrides, f"tracking.experiment=golden_{name}"])
        want = golden[name]
        assert got["state"] == want["state"], name
        assert len(got["epochs"]) == len(want["epochs"]) == 2, name
        for g, w in zip(got["epochs"], want["epochs"]):
            for key in ("epoch", *EPOCH_KEYS):
                assert same(g[key], w[key]), f"{name} epoch {w['epoch']} {key}: {g[key]!r} != {w[key]!r}"
        assert sorted(got["steps"]) == sorted(want["steps"]), name
        for key, points in want["steps"].items():
            assert [s for s, _ in got["steps"][key]] == [s for s, _ in points], f"{name} per-step {key} steps"
            assert same([v for _, v in got["steps"][key]], [v for _, v in points]), (
                f"{name} per-step {key} differs"
            )


def _record() -> None:
    import os
    import tempfile

    recordings = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
    golden = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ADRLAB_RUNS_DIR"] = str(Path(tmp) / "runs")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        for name, overrides in CASES.items():
            golden[name] = run_case([*overrides, f"tracking.experiment=golden_{name}"])
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    recordings[machine()] = golden
    text = json.dumps(recordings, indent=1)
    # One line per list of numbers keeps the fixture short and its diffs readable.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    FIXTURE.write_text(text + "\n")
    print(f"recorded {FIXTURE} for {machine()}")


if __name__ == "__main__" and "--record" in sys.argv:
    _record()
