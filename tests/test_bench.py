"""The benchmark harness's logic (not its timings): the TPE replay keeps to its epoch budget,
and the report renders every suite and keeps suites that were not re-run."""

from __future__ import annotations

import itertools
import json
import math

from adrlab.bench import write_report
from adrlab.sweep.bench import GRID_SPACE, replay_tpe


def _curves() -> dict[tuple, list[float]]:
    # Best-so-far curves over the bench grid: one clear winner, the rest flat and worse.
    curves = {}
    for i, key in enumerate(sorted(itertools.product(*GRID_SPACE.values()))):
        final = 4.0 if key == (0.1, "cosine") else 6.0 + i
        curves[key] = [final + 3.0, final + 1.0, final + 0.5, *([final] * 7)]
    return curves


def test_replay_tpe_spends_at_most_its_budget_and_prunes() -> None:
    curves = _curves()
    budget = int(0.4 * sum(len(c) for c in curves.values()))
    out = replay_tpe(curves, budget, seed=0)
    assert out["epochs"] <= budget
    # Without pruning the budget buys ceil(budget / 10) trials; median pruning buys more.
    assert out["trials"] > math.ceil(budget / 10)
    assert out["best"] >= 4.0


def _results() -> dict:
    return {
        "machine": "test box",
        "framework": {
            "median_seconds": {"bare": 10.0, "adrlab": 10.3, "adrlab_no_step_logging": 10.2},
            "framework_overhead": 0.03,
            "logging_overhead": 0.0098,
            "tokens_per_s": 1234.0,
            "matmul_peak_gflops": 50.0,
            "mfu": 0.12,
            "measured_at": "2026-11-23 10:00",
            "machine": "test box",
        },
        "optimizers": {
            "whole_step": {
                "adamw": {"seconds": 0.040, "optimizer_seconds": 0.002, "ratio_vs_adamw": 1.0},
                "rmsuon": {
                    "seconds": 0.056,
                    "optimizer_seconds": 0.018,
                    "ratio_vs_adamw": 1.4,
                    "ratio_vs_adamw_pooled": 1.38,
                },
            },
            "step_alone_paper_matrices": {"adamw": {"768x512": 0.0003}, "rmsuon": {"768x512": 0.03}},
        },
        "workers": {
            "2 workers x 1 thread": {"seconds": 60.0, "trials_per_hour": 240.0},
            "1 worker x 2 threads": {"seconds": 100.0, "trials_per_hour": 144.0},
            "ratio": 240 / 144,
            "target": ">= 1.5x",
            "ok": True,
        },
    }


def test_report_renders_targets_and_verdicts(tmp_path) -> None:
    path = write_report(_results(), tmp_path)
    text = path.read_text()
    assert "| framework overhead vs bare | +3.0% | ≤ +5% | yes |" in text
    assert "| MLflow per-step logging overhead | +1.0% | ≤ +2% | yes |" in text
    assert "Measured 2026-11-23 10:00 on test box." in text
    assert "Ratio 1.67×; target >= 1.5x: met." in text
    assert "| rmsuon | 56 | 18 | 1.400× | 1.380× | NO |" in text
    assert "| adamw | 40 | 2 | 1.000× |  | yes |" in text  # an older bench.json without the column
    assert json.loads((tmp_path / "bench.json").read_text())["workers"]["ok"] is True
    worse = _results()
    worse["framework"]["framework_overhead"] = 0.08
    assert "| framework overhead vs bare | +8.0% | ≤ +5% | NO |" in write_report(worse, tmp_path).read_text()
