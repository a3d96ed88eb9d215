"""The bulk read path gives exactly what the per-run MLflow API gives, and the read-back bench
builds its synthetic store and times both reports (at a tiny size here; `make bench-readback`
runs the real sizes)."""

from __future__ import annotations

import math
import os

import pandas as pd
from mlflow.entities import Metric

from adrlab import tracking


def _per_run(uri: str, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    c = tracking.client(uri)
    rows = [(r, k, m.step, m.value) for r in run_ids for k in keys for m in c.get_metric_history(r, k)]
    frame = pd.DataFrame(rows, columns=tracking.HISTORY_COLUMNS)
    return frame.sort_values(["run_id", "metric", "step"], kind="stable").reset_index(drop=True)


def test_bulk_history_equals_the_per_run_api_including_nan_inf_and_repeats(tmp_path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, "bulk")
    c = tracking.client(uri)
    run_ids = []
    for r in range(3):
        run_id = c.create_run(experiment).info.run_id
        run_ids.append(run_id)
        points = [Metric("a", float(i * r), 1000 + i, i) for i in range(6)]
        # NaN, +inf and a step logged twice (two values at step 2) must come back as MLflow returns them.
        points += [Metric("b", math.nan, 5, 1), Metric("b", math.inf, 6, 2), Metric("b", 1.0, 7, 2)]
        c.log_batch(run_id, metrics=points)
    keys = ["a", "b", "never_logged"]
    bulk = tracking.metric_histories(uri, run_ids, keys)
    reference = _per_run(uri, run_ids, keys)
    pd.testing.assert_frame_equal(bulk, reference, check_dtype=False)
    assert len(bulk) == 3 * 9 and bulk["value"].isna().sum() == 3
    # The fallback (http:// servers) takes the per-run path and must agree too.
    monkeypatch.setattr(tracking, "_is_database", lambda uri: False)
    pd.testing.assert_frame_equal(tracking.metric_histories(uri, run_ids, keys), reference, check_dtype=False)
    assert tracking.metric_histories(uri, [], keys).empty
    one = tracking.metric_history(uri, run_ids[1], ["a"])
    assert list(one.columns) == ["metric", "step", "value"] and list(one["value"]) == [0, 1, 2, 3, 4, 5]


def test_readback_bench_builds_a_store_and_times_both_reports(tmp_path) -> None:
    from adrlab.readback import bench_readback

    before = {k: os.environ.get(k) for k in ("ADRLAB_ROOT", "ADRLAB_RUNS_DIR", "ADRLAB_REPORTS_DIR")}
    (result,) = bench_readback([(3, 8)], tmp_path, reps=2)
    assert result["adr_runs"] == 12 + 5 and result["unrelated_runs"] == 8  # + the control's 5 seeds
    # 10 epochs × 5 keys + 58 logged steps × (7 or 3) step keys.
    assert result["metric_rows"] == 17 * (50 + 58 * 7) + 8 * (50 + 58 * 3)
    for key in ("build_s", "read_s", "read_per_run_s", "adr_report_s", "sweep_report_s", "cli_report_s"):
        assert result[key] > 0, key
    for key in ("adr_report", "sweep_report", "cli_report"):
        assert len(result[f"{key}_reps"]) == 2 and min(result[f"{key}_reps"]) > 0, key
    # A new process pays for Python's imports on top of the same work.
    assert result["cli_report_s"] > result["adr_report_s"]
    assert {k: os.environ.get(k) for k in before} == before  # the scratch project is gone again


def test_readback_section_says_how_the_report_time_grows_with_the_store() -> None:
    from adrlab.benchreport import readback_section

    def size(trials: int, unrelated: int, report_s: float, read_s: float, cli: list[float]) -> dict:
        return {"trials_per_arm": trials, "adr_runs": 4 * trials, "unrelated_runs": unrelated} | {
            "metric_rows": 1,
            "read_s": read_s,
            "adr_report_s": report_s,
            "adr_report_reps": [report_s] * 6,
            "sweep_report_s": 1.0,
            "sweep_report_reps": [1.0] * 6,
            "cli_report_s": sorted(cli)[3],
            "cli_report_reps": cli,
        }

    small = size(50, 1000, 2.0, 1.0, [5.0, 5.1, 5.2, 5.3, 5.4, 5.5])
    big = size(500, 10_000, 8.0, 5.0, [9.0, 9.5, 10.5, 11.0, 11.5, 12.0])
    text = "\n".join(readback_section({"sizes": [small, big]}))
    assert "from 200 to 2000 ADR runs (10× the runs in the store), `report --adr` took 4× as long" in text
    assert "the read 5×" in text and "imports and lint cost 3.3 s at either size" in text
    # Judged on every repetition: met only when the whole interval is under 10 s.
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| `report")}
    assert lines["| `report --adr`, new process (50 trials/arm, 1200 runs)"].endswith("| met | 6 |")
    assert "within noise" in lines["| `report --adr`, new process (500 trials/arm, 12000 runs)"]
    assert lines["| `report --adr`, in process (500 trials/arm, 12000 runs)"].endswith("| met | 6 |")
    # An older bench.json (one timing, no new-process figure) still renders.
    old = {k: v for k, v in big.items() if not k.endswith("_reps") and k != "cli_report_s"}
    assert "(no interval: older run)" in "\n".join(readback_section({"sizes": [old]}))
