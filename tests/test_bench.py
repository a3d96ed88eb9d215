"""The benchmark harness's logic (not its timings): the TPE replay keeps to its epoch budget,
and the report renders every suite and keeps suites that were not re-run."""

from __future__ import annotations

import itertools
import json
import math

import pytest

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


def _fig(values, target, better="lower"):
    from adrlab.benchstats import judge

    return judge(values, target, better)


def _results() -> dict:
    return {
        "machine": "test box",
        "framework": {
            "median_seconds": {"bare": 10.0, "adrlab": 10.3, "adrlab_no_step_logging": 10.2},
            "framework_overhead": _fig([0.01, 0.02, 0.03, 0.025, 0.02, 0.015], 0.05),
            "whole_run_logging_overhead": _fig([-0.05, 0.02, 0.07, -0.01, 0.03, 0.005], 0.01),
            "tokens_per_s": 1234.0,
            "matmul_peak_gflops": 50.0,
            "mfu": 0.12,
            "measured_at": "2026-11-23 10:00",
            "machine": "test box",
        },
        "logging": {
            "log_every": 10,
            "steps_per_epoch": 58,
            "step_ms": 50.0,
            "statistics_ms_per_logging_step": 1.5,
            "writes_ms_per_epoch": 12.0,
            "statistics_share": _fig([0.003] * 9, 0.01),
            "writes_share": _fig([0.004] * 9, 0.01),
            "total_share": _fig([0.007, 0.006, 0.008, 0.007, 0.007, 0.009, 0.006, 0.007, 0.0075], 0.01),
        },
        "optimizers": {
            "whole_step": {
                "adamw": {"seconds": 0.040, "optimizer_seconds": 0.002, "ratio_vs_adamw": 1.0},
                "rmsuon": {
                    "seconds": 0.056,
                    "optimizer_seconds": 0.018,
                    "ratio_vs_adamw": _fig([1.40, 1.38, 1.42, 1.39, 1.41, 1.40], 1.3),
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


def test_report_renders_medians_intervals_and_verdicts(tmp_path) -> None:
    path = write_report(_results(), tmp_path)
    text = path.read_text()
    assert (
        "| framework overhead: adrlab train() / bare loop − 1 | +2.00% | [+1.00%, +3.00%] | ≤ +5% | met | 6 |"
        in text
    )
    # A whole-run A/B whose spread straddles the 1% target is "within noise", with the reps to resolve it.
    assert "| ≤ +1% | within noise (≈ " in text
    assert "| logging total (share of step time) | +0.70% | [+0.60%, +0.80%] | ≤ 1% | met | 9 |" in text
    assert "Measured 2026-11-23 10:00 on test box." in text
    assert "Ratio 1.67×; target >= 1.5x: met." in text
    assert "| rmsuon | 56 | 18 |  | 1.400× | [1.380×, 1.420×] | missed |" in text
    assert "| adamw | 40 | 2 |  | 1 (baseline) |  |  |" in text
    assert json.loads((tmp_path / "bench.json").read_text())["workers"]["ok"] is True


def test_abba_alternates_the_order_of_variants() -> None:
    from adrlab.bench import abba, interleaved

    assert abba(["a", "b", "c"], 0) == ["a", "b", "c"] and abba(["a", "b", "c"], 1) == ["c", "b", "a"]
    calls: list[str] = []
    interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_order_statistic_interval_covers_the_median_at_the_bench_rep_counts() -> None:
    """Simulation, fixed RNG: skewed, heavy-tailed ratios (a log-normal plus occasional stalls)."""
    import numpy as np

    from adrlab.benchstats import median_interval

    rng = np.random.default_rng(20261201)
    population = np.exp(rng.normal(0.0, 0.05, 2_000_000)) * np.where(rng.random(2_000_000) < 0.1, 1.3, 1.0)
    true_median = float(np.median(population))
    for n, exact in ((6, 1 - 2 / 64), (9, 1 - 2 * 10 / 512), (15, None)):
        hits = 0
        for _ in range(4000):
            est = median_interval(rng.choice(population, n))
            hits += est["lo"] <= true_median <= est["hi"]
        assert est["coverage"] >= 0.95
        if exact is not None:
            assert est["coverage"] == pytest.approx(exact)
        assert hits / 4000 >= 0.95 - 3 * (0.05 * 0.95 / 4000) ** 0.5, (n, hits / 4000)
    few = median_interval([1.0, 2.0, 3.0])
    assert few["lo"] == 1.0 and few["hi"] == 3.0 and few["coverage"] == pytest.approx(0.75)


def test_judge_met_missed_within_noise() -> None:
    from adrlab.benchstats import judge

    assert judge([0.001, 0.002, 0.003, 0.004, 0.005, 0.006], 0.01)["verdict"] == "met"
    assert judge([0.02, 0.03, 0.04, 0.05, 0.06, 0.07], 0.01)["verdict"] == "missed"
    noisy = judge([-0.02, 0.0, 0.012, 0.015, 0.02, 0.03], 0.01)
    assert noisy["verdict"] == "within noise" and noisy["reps_needed"] > 6
    assert judge([1.6, 1.7, 1.8, 1.9, 2.0, 2.1], 1.5, better="higher")["verdict"] == "met"
