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
    (result,) = bench_readback([(3, 8)], tmp_path)
    assert result["adr_runs"] == 12 and result["unrelated_runs"] == 8
    # 10 epochs × 5 keys + 58 logged steps × (7 or 3) step keys.
    assert result["metric_rows"] == 12 * (50 + 58 * 7) + 8 * (50 + 58 * 3)
    for key in ("build_s", "read_s", "read_per_run_s", "adr_report_s", "sweep_report_s"):
        assert result[key] > 0, key
    assert {k: os.environ.get(k) for k in before} == before  # the scratch project is gone again


def test_readback_section_says_how_the_report_time_grows_with_the_store() -> None:
    from adrlab.benchreport import readback_section

    def size(trials: int, unrelated: int, report_s: float, read_s: float) -> dict:
        return {"trials_per_arm": trials, "adr_runs": 4 * trials, "unrelated_runs": unrelated} | {
            "metric_rows": 1,
            "read_s": read_s,
            "adr_report_s": report_s,
            "sweep_report_s": 1.0,
        }

    text = "\n".join(readback_section({"sizes": [size(50, 1000, 2.0, 1.0), size(500, 10_000, 8.0, 5.0)]}))
    assert "from 200 to 2000 ADR runs (10× the runs in the store), `report --adr` took 4× as long" in text
    assert "the read 5×" in text
