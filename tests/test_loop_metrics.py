"""Metrics the loop measures for any optimizer: update RMS checked against an independent formula."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from adrlab import tracking
from adrlab.config import compose
from adrlab.loop_metrics import UpdateMeter
from adrlab.train import train
from tests.conftest import TINY

SGD_DIR = "optimizer"


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADRLAB_CONFIG_DIRS", "")  # restored (removed) after the test
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_update_meter_is_the_rms_of_the_change() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    meter = UpdateMeter(model)
    meter.snapshot()
    deltas = [torch.randn_like(p) for p in model.parameters()]
    with torch.no_grad():
        for p, d in zip(model.parameters(), deltas, strict=True):
            p.add_(d)
    flat = torch.cat([d.flatten() for d in deltas])
    assert meter.update_rms() == pytest.approx(float(flat.norm() / math.sqrt(flat.numel())), rel=1e-6)
    with pytest.raises(RuntimeError, match="snapshot"):
        meter.update_rms()


def test_sgd_from_a_config_dir_logs_update_rms_eta_times_grad_norm(tmp_path: Path, runs_dir: Path) -> None:
    """Plain SGD, no momentum, no decay, no clipping: Δθ = −η·g, so update RMS must be
    η·‖g‖/√n with ‖g‖ the logged grad norm and n the model's parameter count (logged too)."""
    conf = tmp_path / "conf" / SGD_DIR
    conf.mkdir(parents=True)
    (conf / "sgd.yaml").write_text("_target_: torch.optim.SGD\nlr: 0.05\n")
    overrides = [*TINY, "optimizer=sgd", "regularizer=none", "trainer.grad_clip=0", "trainer.epochs=1"]
    cfg = compose(overrides, config_dirs=[str(tmp_path / "conf")])
    result = train(cfg)
    assert result.state == "COMPLETE"
    uri = tracking.tracking_uri(cfg)
    history = tracking.metric_history(uri, result.run_id, ["update_rms", "grad_norm", "lr"])
    table = history.pivot_table(index="step", columns="metric", values="value")
    n_params = float(tracking.client(uri).get_run(result.run_id).data.params["derived.n_params"])
    assert len(table) >= 3
    for _, row in table.iterrows():
        assert row["lr"] == pytest.approx(0.05)
        assert row["update_rms"] > 0
        assert row["update_rms"] == pytest.approx(0.05 * row["grad_norm"] / math.sqrt(n_params), rel=1e-4)
