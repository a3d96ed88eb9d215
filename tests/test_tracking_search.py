"""`tracking.search_runs` on a database store reads runs by SQL; it must give the frame
`mlflow.search_runs` gives (rows, row order, values, dtypes) for every filter adrlab uses, and
leave every other filter, file stores and servers to MLflow."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag

from adrlab import tracking

T0 = 1_700_000_000_000
SWEEP, TRIAL, SEED = "adrlab.sweep", tracking.TAG_TRIAL, tracking.TAG_SEED
HASH, STATE, CODE = tracking.TAG_CONFIG_HASH, tracking.TAG_STATE, "adrlab.code_hash"


def _run(c, experiment: str, start: int, tags: dict, params=None, metrics=None, status="FINISHED") -> str:
    run_id = c.create_run(experiment, start_time=T0 + start).info.run_id
    c.log_batch(
        run_id,
        metrics=[Metric(k, v, T0 + i, i) for i, (k, v) in enumerate((metrics or {}).items())],
        params=[Param(k, v) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    if status != "RUNNING":  # a running run has no end time: a NaT end_time
        c.set_terminated(run_id, status=status, end_time=T0 + start + 500)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """Several experiments; finished, failed, killed and running runs; a deleted run and a
    deleted experiment; NaN and repeated metrics; two runs with the same start time; runs
    without any param, tag or metric of their own; a tag that differs only in case."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('search') / 'mlflow.db'}"
    c = tracking.client(uri)
    a, b = tracking.ensure_experiment(uri, "sweep-a"), tracking.ensure_experiment(uri, "sweep-b")
    other, gone = tracking.ensure_experiment(uri, "other"), tracking.ensure_experiment(uri, "gone")
    ids: dict[str, str] = {}
    for i in range(4):
        tags = {SWEEP: "a", TRIAL: str(i), SEED: str(1 + i % 2), STATE: "COMPLETE", HASH: f"h{i % 2}"}
        metrics = {"val_ppl": 50.0 - i, "loss": math.nan if i == 2 else 3.0 + i}
        params = {"optimizer.lr": "0.003", "regularizer.weight_decay": repr(10.0**-i)}
        ids[f"a{i}"] = _run(c, a, 1000 * (i % 3), {**tags, CODE: "c1"}, params, metrics)  # a0, a3 tie
    ids["failed"] = _run(c, a, 5000, {SWEEP: "a", TRIAL: "9", STATE: "DIVERGED", HASH: "h1"}, status="FAILED")
    ids["running"] = _run(c, a, 6000, {SWEEP: "a", TRIAL: "10", HASH: "h0"}, {"x": "1"}, status="RUNNING")
    ids["killed"] = _run(c, a, 7000, {SWEEP: "a", TRIAL: "11"}, status="KILLED")
    ids["parent"] = _run(
        c,
        a,
        100,
        {"adrlab.sweep_parent": "a", SWEEP: "a", "adrlab.storage": "journal:x"},
        {"sweep.spec": "a"},
    )
    for i in range(6):  # ties at one start time: MLflow orders them by run id, not by insertion
        ids[f"tie{i}"] = _run(c, a, 3000, {SWEEP: "a", TRIAL: str(20 + i), HASH: "h1"}, {"tie": str(i)})
    ids["upper"] = _run(c, a, 8000, {SWEEP: "A", HASH: "h0"})
    ids["deleted"] = _run(c, a, 9000, {SWEEP: "a", HASH: "h0"})
    c.delete_run(ids["deleted"])
    ids["b0"] = _run(
        c, b, 200, {SWEEP: "b", HASH: "h0", STATE: "COMPLETE", CODE: "c1"}, metrics={"val_ppl": 7.0}
    )
    ids["b_in_a"] = _run(c, b, 300, {SWEEP: "a", HASH: "h1"})
    ids["adr"] = _run(c, other, 400, {tracking.TAG_ADR: "0004", tracking.TAG_ADR_SCALE: "smoke"})
    ids["bare"] = _run(c, other, 500, {})
    ids["in_gone"] = _run(c, gone, 600, {SWEEP: "a", HASH: "h0"})
    c.delete_experiment(gone)
    return {"uri": uri, "ids": ids}


def _both(uri: str, monkeypatch, *args, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(SQL path, mlflow.search_runs path) for the same search; the first must not touch MLflow's
    search or build an MlflowClient."""

    def refuse(*_a, **_k):
        raise AssertionError("the SQL path asked mlflow.search_runs")

    with monkeypatch.context() as m:
        m.setattr(tracking, "_search_runs_api", refuse)
        m.setattr(tracking, "client", refuse)  # experiments are looked up by SQL too
        sql = tracking.search_runs(uri, *args, **kwargs)
    return sql, _api(uri, monkeypatch, *args, **kwargs)


def _api(uri: str, monkeypatch, *args, **kwargs) -> pd.DataFrame:
    with monkeypatch.context() as m:
        m.setattr(tracking, "_is_database", lambda uri: False)
        return tracking.search_runs(uri, *args, **kwargs)


def _assert_same(sql: pd.DataFrame, api: pd.DataFrame) -> None:
    assert sorted(sql.columns) == sorted(api.columns)
    # Same rows in the same order (callers sort by start_time with ties left as MLflow gave them).
    pd.testing.assert_frame_equal(sql, api.loc[:, list(sql.columns)], check_dtype=True)


CALLER_FILTERS = [
    "",
    f"tags.`{SWEEP}` = 'a'",  # sweep arms, reconcile_runs, mark_runs_killed
    f"tags.`{SWEEP}` = 'A'",
    f"tags.`{SWEEP}` = 'nobody'",
    f"tags.`{tracking.TAG_ADR}` = '0004' and tags.`{tracking.TAG_ADR_SCALE}` = 'smoke'",  # stored_runs
    f"tags.`{HASH}` = 'h0'",  # find_resumable
    f"tags.`{HASH}` = 'h1' and tags.`{STATE}` = 'COMPLETE'",  # find_reusable
    f"tags.`{HASH}` = 'h1' and tags.`{STATE}` = 'COMPLETE' and tags.`{CODE}` = 'c1'",
    "tags.`adrlab.sweep_parent` = 'a' and tags.`adrlab.storage` = 'journal:x'",  # ensure_parent_run
    f"tags.`{SWEEP}` != 'a'",
    "params.`optimizer.lr` = '0.003'",
    "attributes.status = 'FAILED'",
    "status != 'FINISHED'",
]


@pytest.mark.parametrize("filter_string", CALLER_FILTERS)
@pytest.mark.parametrize(
    "experiments", [["sweep-a"], ["sweep-a", "sweep-b", "other", "gone", "missing"], None]
)
def test_sql_search_equals_mlflow_search(store, monkeypatch, filter_string, experiments) -> None:
    sql, api = _both(store["uri"], monkeypatch, experiments, filter_string)
    _assert_same(sql, api)
    deleted = {store["ids"]["deleted"], store["ids"]["in_gone"]}
    assert not deleted & set(sql.get("run_id", []))


def test_sql_search_by_run_id_and_with_statuses(store, monkeypatch) -> None:
    ids = store["ids"]
    wanted = ", ".join(f"'{ids[k]}'" for k in ("a1", "failed", "deleted", "b0"))
    sql, api = _both(store["uri"], monkeypatch, None, f"attributes.run_id IN ({wanted})")
    _assert_same(sql, api)
    assert set(sql["run_id"]) == {ids["a1"], ids["failed"], ids["b0"]}
    sql, api = _both(store["uri"], monkeypatch, None, f"run_id = '{ids['a2']}'")
    _assert_same(sql, api)
    for statuses in (["RUNNING"], ["FINISHED"], ["FAILED", "KILLED"]):
        sql, api = _both(store["uri"], monkeypatch, ["sweep-a"], f"tags.`{SWEEP}` = 'a'", statuses=statuses)
        _assert_same(sql, api)
        assert set(sql["status"]) == set(statuses)


def test_sql_search_keeps_the_types_callers_rely_on(store) -> None:
    runs = tracking.search_runs(store["uri"], ["sweep-a"], f"tags.`{SWEEP}` = 'a'")
    assert str(runs["start_time"].dtype) == str(runs["end_time"].dtype)
    assert str(runs["start_time"].dtype).startswith("datetime64") and "UTC" in str(runs["start_time"].dtype)
    assert runs.set_index("run_id").loc[store["ids"]["running"], "end_time"] is pd.NaT
    assert runs["metrics.loss"].isna().sum() >= 1 and runs["metrics.val_ppl"].dtype == float
    assert runs[f"tags.{STATE}"].isna().any() and runs["params.x"].notna().sum() == 1
    # MLflow's order: newest first, ties by run id.
    ordered = runs.sort_values(["start_time", "run_id"], ascending=[False, True])
    assert list(runs["run_id"]) == list(ordered["run_id"])


@pytest.mark.parametrize(
    "filter_string",
    [
        "metrics.val_ppl < 49",
        f"tags.`{SWEEP}` LIKE 'a%'",
        "attributes.run_name = 'x'",
        f"tags.`{HASH}` IS NULL",
        f"tags.`{HASH}` = 'h0' and metrics.val_ppl > 0",
    ],
)
def test_filters_the_sql_path_does_not_translate_go_to_mlflow(store, monkeypatch, filter_string) -> None:
    assert tracking._sql_filters(filter_string, "sqlite") is None

    def refuse(*_a, **_k):
        raise AssertionError("an untranslated filter reached the SQL path")

    with monkeypatch.context() as m:
        m.setattr(tracking, "_search_runs_sql", refuse)
        fallback = tracking.search_runs(store["uri"], ["sweep-a", "sweep-b"], filter_string)
    api = _api(store["uri"], monkeypatch, ["sweep-a", "sweep-b"], filter_string)
    pd.testing.assert_frame_equal(fallback, api)


def test_a_bad_filter_gets_mlflows_error(store) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="Invalid"):
        tracking.search_runs(store["uri"], ["sweep-a"], "tags.`x` = ")
    assert tracking.search_runs(store["uri"], ["missing"], f"tags.`{SWEEP}` = 'a'").empty


def test_adr_evidence_is_identical_through_both_paths(tmp_path, monkeypatch) -> None:
    """What `report --adr` writes from a store: stored runs and the evidence CSV, byte for byte."""
    from adrlab.adr.document import parse_adr
    from adrlab.adr.runs import collect_evidence, find_adr, stored_runs
    from adrlab.readback import build_store, scratch_project

    with scratch_project(tmp_path / "project", trials=4):
        build_store(trials=4, unrelated=12)
        uri, adr = tracking.tracking_uri(None), parse_adr(find_adr("0004"))
        outputs = []
        for translate in (tracking._sql_filters, lambda *_: None):  # SQL, then mlflow.search_runs
            with monkeypatch.context() as m:
                m.setattr(tracking, "_sql_filters", translate)
                runs = stored_runs(adr, "smoke", uri)
                outputs.append((runs, collect_evidence(adr, "smoke", uri).to_csv(index=False)))
    (sql_runs, sql_csv), (api_runs, api_csv) = outputs
    assert len(sql_runs) == 16 + 5 and sql_csv.count("\n") > 21 * 50  # 2 arms × 4 trials × 2 seeds + control
    _assert_same(sql_runs, api_runs)
    assert sql_csv == api_csv


def test_a_store_without_tables_reads_as_empty_through_the_client(tmp_path) -> None:
    """A fresh SQLite file has no `experiments` table yet: the lookup falls back to the client,
    which creates MLflow's tables, and the search finds nothing."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    assert tracking.search_runs(uri, ["anything"], f"tags.`{SWEEP}` = 'a'").empty
    assert tracking.search_runs(uri, None, f"tags.`{SWEEP}` = 'a'").empty
