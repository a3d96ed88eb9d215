"""MLflow: the one place that writes runs and the one place that reads them back.

Writes go through `RunLogger`, which buffers metrics and sends them with `log_batch`
(one REST/SQL call per flush instead of one per point) and retries the "database is
locked" errors that several workers sharing one SQLite file can hit. Reads go through
`search_runs` / `metric_history`, which return pandas frames; sweeps, ADR reports and
criteria all use them.
"""

from __future__ import annotations

import logging
import math
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from omegaconf import DictConfig

from adrlab.config import project_root

T = TypeVar("T")

TAG_CONFIG_HASH = "adrlab.config_hash"
TAG_GIT_SHA = "adrlab.git_sha"
TAG_SEED = "adrlab.seed"
TAG_ARM = "adrlab.arm"
TAG_SCALE = "adrlab.scale"
TAG_STATE = "adrlab.state"  # COMPLETE | DIVERGED | PRUNED | KILLED (finer than MLflow's status)
TAG_FAILURE = "failure_reason"
TAG_REUSED_FROM = "adrlab.reused_from"
TAG_TRIAL = "adrlab.trial"  # the Optuna trial number of a sweep run
TAG_SWEEP = "adrlab.sweep"  # the sweep (study) a run belongs to
TAG_SWEEP_PARENT = "adrlab.sweep_parent"  # on a sweep's parent run, not its trials
TAG_STORAGE = "adrlab.storage"  # the Optuna storage a sweep's parent run reports to
TAG_ADR = "adrlab.adr"  # the ADR number of a run trained for an ADR's arm
TAG_ADR_SCALE = "adrlab.adr_scale"
TAG_ADR_TITLE = "adrlab.adr_title"
# MLflow's own tags: the run's name and its description (markdown) in `mlflow ui`.
TAG_RUN_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"
# MLflow 3 opens an experiment on its GenAI overview unless it knows the experiment trains models.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DEFAULT_UI = "http://127.0.0.1:5000"  # where `adrlab ui` / `make ui` serve the embedded store

_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100

# MLflow logs a lot at INFO (alembic migrations, run links); keep the console for our output.
for _name in ("mlflow", "alembic", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# It logs every SQLite "database is locked" with a traceback before raising it; `with_retry`
# retries those, and any other error still raises, so the log adds only noise.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def runs_dir(cfg: DictConfig | None = None) -> Path:
    """The folder for the embedded MLflow store, checkpoints, caches and study journals."""
    raw = (cfg.runs_dir if cfg is not None else None) or os.environ.get("ADRLAB_RUNS_DIR") or "runs"
    path = Path(raw)
    if not path.is_absolute():
        path = project_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri(cfg: DictConfig | None = None) -> str:
    if cfg is not None and cfg.tracking.uri:
        return str(cfg.tracking.uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{runs_dir(cfg) / 'mlflow.db'}"


def artifact_root(cfg: DictConfig | None = None) -> str:
    return (runs_dir(cfg) / "artifacts").as_uri()


def client(uri: str):  # -> MlflowClient (import kept lazy: mlflow takes ~1 s to import)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def with_retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Retry SQLite lock contention with jittered backoff; other errors surface at once."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps sqlite errors in several exception types
            text = str(exc).lower()
            transient = "database is locked" in text or "busy" in text or "unique constraint" in text
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def mark_training_experiments(uri: str) -> None:
    """Tag every experiment without a kind as model training, so that `mlflow ui` opens its
    runs table instead of MLflow 3's GenAI overview (stores made before adrlab set the kind)."""
    c = client(uri)
    for e in with_retry(c.search_experiments):
        if e.tags.get(TAG_EXPERIMENT_KIND) is None:
            with_retry(
                lambda e=e: c.set_experiment_tag(e.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            )


def ensure_experiment(uri: str, name: str, cfg: DictConfig | None = None) -> str:
    """Experiment id for `name`, created if needed (race-safe: a concurrent creator wins),
    marked as a model-training experiment so `mlflow ui` opens its runs table."""
    c = client(uri)
    existing = with_retry(lambda: c.get_experiment_by_name(name))
    if existing is not None:
        if existing.tags.get(TAG_EXPERIMENT_KIND) is None:  # made before adrlab set the kind
            with_retry(
                lambda: c.set_experiment_tag(existing.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            )
        return existing.experiment_id
    location = artifact_root(cfg) if uri.startswith("sqlite") else None
    kind = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
    try:
        return with_retry(lambda: c.create_experiment(name, artifact_location=location, tags=kind))
    except Exception:
        again = c.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


# --------------------------------------------------------------------------- links into `mlflow ui`


def ui_url(
    uri: str | None = None,
    experiment_id: str | None = None,
    run_id: str | None = None,
    *,
    base: str | None = None,
) -> str:
    """The `mlflow ui` address of an experiment's training-runs table, or of one run's page
    (without experiment_id: MLflow's /runs/<id> route, which finds the run's experiment).

    base: the UI's address; default: the tracking server itself when `uri` is http(s), else
    $ADRLAB_UI_URL, else `adrlab ui`'s own default. `?workflowType=machine_learning` keeps MLflow 3
    (3.17 checked in Chromium) from opening an experiment on its GenAI overview ("No data") and
    a run page under GenAI's "Evaluations": it ignores the experiment's kind tag there.
    """
    if base is None:
        remote = uri is not None and uri.startswith(("http://", "https://"))
        base = uri if remote else os.environ.get("ADRLAB_UI_URL") or DEFAULT_UI
    base = base.rstrip("/")
    if experiment_id is None:
        page = f"/runs/{run_id}" if run_id is not None else "/experiments"
        return f"{base}/#{page}?workflowType=machine_learning"
    page = f"/runs/{run_id}" if run_id is not None else ""
    return f"{base}/#/experiments/{experiment_id}{page}?workflowType=machine_learning"


def experiment_urls(
    uri: str, names: Iterable[str] | None = None, *, base: str | None = None
) -> dict[str, str]:
    """Experiment name → its runs-table URL: the named experiments that exist, or (names=None)
    every experiment in the store except MLflow's own "Default" while it holds no run."""
    c = client(uri)
    if names is not None:
        found = [e for name in names if (e := with_retry(lambda name=name: c.get_experiment_by_name(name)))]
    else:
        found = [
            e
            for e in with_retry(c.search_experiments)
            if e.name != "Default" or with_retry(lambda e=e: c.search_runs([e.experiment_id], max_results=1))
        ]
    return {e.name: ui_url(uri, e.experiment_id, base=base) for e in sorted(found, key=lambda e: e.name)}


def run_urls(uri: str, run_ids: Iterable[str], *, base: str | None = None) -> dict[str, str]:
    """Run id → its run-page URL for the active runs of active experiments among `run_ids`
    (a database store: one SQL query per few hundred runs; a server: one search per 100)."""
    wanted = sorted(set(map(str, run_ids)))
    if not wanted:
        return {}
    if _is_database(uri):
        pairs = with_retry(lambda: _run_experiments_sql(uri, wanted))
    else:
        pairs = _run_experiments_api(uri, wanted)
    return {run_id: ui_url(uri, exp_id, run_id, base=base) for run_id, exp_id in pairs}


def _run_experiments_api(uri: str, wanted: list[str]) -> list[tuple[str, str]]:
    c = client(uri)
    ids = [e.experiment_id for e in with_retry(c.search_experiments)]
    pairs: list[tuple[str, str]] = []
    for i in range(0, len(wanted), 100):
        chunk = ", ".join(f"'{r}'" for r in wanted[i : i + 100])
        runs = with_retry(
            lambda chunk=chunk: c.search_runs(ids, f"attributes.run_id IN ({chunk})", max_results=100)
        )
        pairs += [(run.info.run_id, run.info.experiment_id) for run in runs]
    return pairs


def _run_experiments_sql(uri: str, wanted: list[str]) -> list[tuple[str, str]]:
    """(run id, experiment id) from MLflow's `runs` and `experiments` tables: the rows the
    API search above returns (active runs of active experiments), without loading each run's
    params, tags and metrics (20 searches of 100 runs took ~2 s at 2,000 runs)."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun

    runs, exps = SqlRun.__table__, SqlExperiment.__table__
    pairs: list[tuple[str, str]] = []
    with _engine(uri).connect() as conn:
        for chunk in _chunks(wanted):
            query = (
                sqlalchemy.select(runs.c.run_uuid, runs.c.experiment_id)
                .join(exps, exps.c.experiment_id == runs.c.experiment_id)
                .where(runs.c.run_uuid.in_(chunk))
                .where(runs.c.lifecycle_stage == "active", exps.c.lifecycle_stage == "active")
            )
            pairs += [(run_id, str(exp_id)) for run_id, exp_id in conn.execute(query)]
    return pairs


# --------------------------------------------------------------------------- dataset inputs


def training_dataset(data_cfg: DictConfig, data: Any) -> Any:  # data: TokenData -> mlflow Dataset
    """What a run trained on, as an MLflow dataset (the runs table's Dataset column): a name
    a person reads, a digest of the token tensors (train and val: equal digests, same data),
    and the source (the files read, or the generator and its settings)."""
    import hashlib
    import json

    from mlflow.entities import Dataset

    digest = hashlib.sha256()
    for split in (data.train, data.val):
        digest.update(split.contiguous().numpy().tobytes())
    info = data.info
    if data_cfg.name == "synthetic":
        name = f"synthetic-markov(seed={data_cfg.source_seed}, V={data.vocab_size})"
        source_type, source = "code", {"generator": str(info.get("source", ""))}
    else:
        mode = "" if data_cfg.get("mode", "chunk") == "chunk" else f"-{data_cfg.mode}"
        name = f"{data_cfg.name}-{data_cfg.get('tokenizer', 'word')}{mode}"
        source_type, source = "local", {"uri": str(info.get("source", ""))}
    profile = {
        "vocab_size": data.vocab_size,
        **{
            k: info[k]
            for k in ("n_train_tokens", "n_val_tokens", "n_train_blocks", "n_val_blocks")
            if k in info
        },
        "seq_len": int(data_cfg.seq_len),
    }
    if data.entropy_floor_ppl is not None:
        profile["entropy_floor_ppl"] = round(float(data.entropy_floor_ppl), 4)
    return Dataset(
        name, digest.hexdigest()[:12], source_type, json.dumps(source), profile=json.dumps(profile)
    )


def git_sha() -> str:
    """The commit of the code that runs: the package's checkout (which also holds the built-in
    configs), not the project root, which may be another checkout or a researcher's folder."""
    try:
        root = Path(__file__).resolve().parent
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class RunLogger:
    """Buffered writer for one MLflow run."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow.entities import Metric

        self._metric_cls = Metric
        self.uri = uri
        self.run_id = run_id
        self.client = client(uri)
        self._buffer: list[Any] = []

    def metric(self, key: str, value: float, step: int) -> None:
        self._buffer.append(self._metric_cls(key, float(value), int(time.time() * 1000), int(step)))

    def metrics(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.metric(key, value, step)

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:_MAX_METRICS_PER_BATCH], self._buffer[_MAX_METRICS_PER_BATCH:]
            with_retry(lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk))

    def params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in sorted(values.items())]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            chunk = items[i : i + _MAX_PARAMS_PER_BATCH]
            with_retry(lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def tags(self, values: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in values.items() if v is not None]
        if items:
            with_retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def dataset(self, dataset: Any, context: str = "train") -> None:
        """Log an mlflow Dataset as this run's input (shown in the runs table's Dataset column)."""
        from mlflow.entities import DatasetInput, InputTag

        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        with_retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def copy_inputs(self, source_run_id: str) -> None:
        """Log the dataset inputs of another run (a reused run trained on the same data)."""
        inputs = with_retry(lambda: self.client.get_run(source_run_id)).inputs
        if inputs is not None and inputs.dataset_inputs:
            with_retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs.dataset_inputs))

    def artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        with_retry(lambda: self.client.log_artifact(self.run_id, str(local_path), artifact_path))

    def text_artifact(self, name: str, text: str) -> None:
        """Log `text` as the artifact file `name` (e.g. config.yaml, summary.md)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.artifact(path)

    def start_system_metrics(self, resume: bool = False) -> None:
        """MLflow's system metrics monitor for this run (tracking.system_metrics=true)."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError as exc:
            raise RuntimeError(
                f"tracking.system_metrics=true needs {exc.name or 'psutil'} (pip install psutil; pynvml for "
                "GPU metrics), or set tracking.system_metrics=false"
            ) from exc
        self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=resume, tracking_uri=self.uri)
        self._monitor.start()

    def finish(self, status: str) -> None:
        if getattr(self, "_monitor", None) is not None:
            self._monitor.finish()
            self._monitor = None
        self.flush()
        with_retry(lambda: self.client.set_terminated(self.run_id, status=status))


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


# --------------------------------------------------------------------------- read path


def search_runs(
    uri: str,
    experiments: Iterable[str] | None,
    filter_string: str = "",
    statuses: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Runs of the named experiments (None: all of them) as a pandas frame (params.*,
    metrics.*, tags.* columns). Experiments that do not exist yield no rows, not an error.

    On a database-backed store, a filter of equality tests on tags, params, run id and status
    (the ones adrlab uses) is answered by a few set-based SQL queries on MLflow's tables, giving
    the frame `mlflow.search_runs` gives (rows, values, dtypes, row order) without building an
    MLflow entity per run (~2.8 ms a run). File stores, tracking servers and every other filter
    go through `mlflow.search_runs`.
    """
    where = _sql_filters(filter_string, _engine(uri).dialect.name) if _is_database(uri) else None
    ids = with_retry(lambda: _experiment_ids_sql(uri, experiments)) if where is not None else None
    if ids is None:
        c = client(uri)
        if experiments is None:
            ids = [e.experiment_id for e in with_retry(c.search_experiments)]
        else:
            ids = [
                e.experiment_id for name in experiments if (e := c.get_experiment_by_name(name)) is not None
            ]
    if not ids:
        return pd.DataFrame()
    if where is not None:
        frame = with_retry(lambda: _search_runs_sql(uri, ids, where))
    else:
        frame = _search_runs_api(uri, ids, filter_string)
    if statuses is not None and not frame.empty:
        frame = frame[frame["status"].isin(list(statuses))]
    return frame.reset_index(drop=True)


def _experiment_ids_sql(uri: str, experiments: Iterable[str] | None) -> list[str] | None:
    """Ids of the named experiments (None: every active one), as MlflowClient finds them, read
    from MLflow's `experiments` table: building the client (its store checks the schema) cost
    ~0.7 s of a 10 s `adrlab report`. None for a store without that table yet: the client
    creates it."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    engine = _engine(uri)
    if not sqlalchemy.inspect(engine).has_table(SqlExperiment.__tablename__):
        return None
    query = sqlalchemy.select(SqlExperiment.experiment_id, SqlExperiment.name)
    names = None if experiments is None else list(experiments)
    if names is None:
        query = query.where(SqlExperiment.lifecycle_stage == "active")
    else:  # get_experiment_by_name finds a deleted experiment too
        query = query.where(SqlExperiment.name.in_(names))
    with engine.connect() as conn:
        found = {name: str(i) for i, name in conn.execute(query)}
    return list(found.values()) if names is None else [found[n] for n in dict.fromkeys(names) if n in found]


def _search_runs_api(uri: str, ids: list[str], filter_string: str) -> pd.DataFrame:
    import mlflow

    # mlflow.search_runs reads the fluent tracking URI, and set_tracking_uri also exports
    # MLFLOW_TRACKING_URI: restore both so this read never redirects later writes.
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_ids=ids, filter_string=filter_string, output_format="pandas")
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


# mlflow.search_runs returns at most this many runs (its max_results default); the SQL path too.
_SEARCH_MAX_RUNS = 100_000
_SQL_ATTRIBUTES = ("run_id", "status")
_SQL_COMPARATORS = {"tag": ("=", "!="), "parameter": ("=", "!="), "attribute": ("=", "!=", "IN", "NOT IN")}


def _sql_filters(filter_string: str, dialect: str) -> list[Any] | None:
    """SQLAlchemy conditions on MLflow's `runs` table for `filter_string`, parsed by MLflow's
    own parser and compared with its own per-dialect comparisons (case-sensitive everywhere);
    None for anything else (metrics, LIKE, run names, datasets, IS NULL, a syntax error), which
    the caller then leaves to `mlflow.search_runs`: it understands all of them, or says why not."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.search_utils import SearchUtils

    try:
        parsed = SearchUtils.parse_search_filter(filter_string)
    except Exception:  # MLflow's search raises the error a person should see
        return None
    conditions = []
    for term in parsed:
        kind, key = term["type"], SearchUtils.translate_key_alias(term["key"])
        comparator = term["comparator"].upper()
        if comparator not in _SQL_COMPARATORS.get(kind, ()):
            return None
        compare = SearchUtils.get_sql_comparison_func(comparator, dialect)
        if kind == "attribute":
            if key not in _SQL_ATTRIBUTES:
                return None
            conditions.append(compare(getattr(SqlRun, SqlRun.get_attribute_name(key)), term["value"]))
            continue
        # As MLflow's own query (an inner join on the matching rows): the run must have the key.
        entity = SqlTag if kind == "tag" else SqlParam
        same_key = SearchUtils.get_sql_comparison_func("=", dialect)(entity.key, key)
        match = sqlalchemy.select(entity.run_uuid).where(
            entity.run_uuid == SqlRun.run_uuid, same_key, compare(entity.value, term["value"])
        )
        conditions.append(match.exists())
    return conditions


def _search_runs_sql(uri: str, experiment_ids: list[str], where: list[Any]) -> pd.DataFrame:
    """The runs `mlflow.search_runs` finds (active runs of these experiments meeting `where`,
    newest first, ties by run id) with their params, tags and latest metrics: one query for
    the runs, then one per table per few hundred runs."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

    query = (
        sqlalchemy.select(
            SqlRun.run_uuid,
            SqlRun.experiment_id,
            SqlRun.status,
            SqlRun.artifact_uri,
            SqlRun.start_time,
            SqlRun.end_time,
        )
        .where(SqlRun.experiment_id.in_([int(i) for i in experiment_ids]), SqlRun.lifecycle_stage == "active")
        .where(*where)
        .order_by(SqlRun.start_time.desc(), SqlRun.run_uuid)
        .limit(_SEARCH_MAX_RUNS)
    )
    with _engine(uri).connect() as conn:
        runs = conn.execute(query).all()
        run_ids = [r.run_uuid for r in runs]
        params = _values_by_run(conn, SqlParam, run_ids)
        tags = _values_by_run(conn, SqlTag, run_ids)
        metrics = _values_by_run(conn, SqlLatestMetric, run_ids)
    return _runs_frame(runs, metrics, params, tags)


def _values_by_run(conn: Any, entity: Any, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """run id -> {key: value} from one of MLflow's key-value tables (params, tags, or
    latest_metrics, whose NaN is stored as is_nan with a placeholder value)."""
    import sqlalchemy

    nan = getattr(entity, "is_nan", sqlalchemy.false())
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(run_ids):
        query = sqlalchemy.select(entity.run_uuid, entity.key, entity.value, nan).where(
            entity.run_uuid.in_(chunk)
        )
        for run_id, key, value, is_nan in conn.execute(query):
            out.setdefault(run_id, {})[key] = math.nan if is_nan else value
    return out


def _runs_frame(runs: list[Any], metrics: dict, params: dict, tags: dict) -> pd.DataFrame:
    """The frame mlflow.search_runs(output_format="pandas") builds, column for column: the same
    Python values in the same kind of lists, so pandas infers the same dtypes (start_time and
    end_time converted one by one as MLflow does: a column of only NaT has a dtype of its own).
    Key columns come sorted by name; MLflow orders them as its sets happen to iterate."""
    data: dict[str, list[Any]] = {
        "run_id": [r.run_uuid for r in runs],
        "experiment_id": [str(r.experiment_id) for r in runs],
        "status": [r.status for r in runs],
        "artifact_uri": [r.artifact_uri for r in runs],
        "start_time": _timestamps([r.start_time for r in runs]),
        "end_time": _timestamps([r.end_time for r in runs]),
    }
    for prefix, values, missing in (
        ("metrics.", metrics, math.nan),
        ("params.", params, None),
        ("tags.", tags, None),
    ):
        for key in sorted({k for per_run in values.values() for k in per_run}):
            data[prefix + key] = [values.get(r.run_uuid, {}).get(key, missing) for r in runs]
    return pd.DataFrame(data)


def _timestamps(millis: list[int | None]) -> Any:
    """Epoch milliseconds as the column MLflow builds from one Timestamp per run, converted in
    one call (one by one cost ~0.1 s per 1000 runs); a column of only None stays one by one,
    since pandas gives that column a dtype of its own."""
    if all(m is None for m in millis):
        return [pd.to_datetime(m, unit="ms", utc=True) for m in millis]
    return pd.to_datetime(pd.Series(millis, dtype="float64"), unit="ms", utc=True).array


def metric_history(uri: str, run_id: str, keys: Iterable[str]) -> pd.DataFrame:
    """Long frame (metric, step, value) of the given metrics for one run."""
    frame = metric_histories(uri, [run_id], keys)
    return frame.drop(columns="run_id")


HISTORY_COLUMNS = ["run_id", "metric", "step", "value"]
_SQL_CHUNK = 400  # run ids per IN (...) list: well under SQLite's bound-variable limit


def metric_histories(uri: str, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Long frame (run_id, metric, step, value) of the given metrics for many runs.

    On a database-backed store (sqlite, postgresql, mysql) this is one SQL query per few
    hundred runs on MLflow's `metrics` table; elsewhere (an http:// tracking server) one
    get_metric_history call per run and metric. Both give the values MLflow's API gives
    (NaN restored from is_nan), sorted by run, metric, step."""
    run_ids, keys = list(dict.fromkeys(run_ids)), sorted(set(keys))
    if not run_ids or not keys:
        frame = pd.DataFrame([], columns=HISTORY_COLUMNS)
    elif _is_database(uri):
        frame = with_retry(lambda: _histories_sql(uri, run_ids, keys))
    else:
        c = client(uri)
        rows = [
            (run_id, key, m.step, m.value)
            for run_id in run_ids
            for key in keys
            for m in with_retry(lambda run_id=run_id, key=key: c.get_metric_history(run_id, key))
        ]
        frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    # Plain Python strings, not pandas' Arrow-backed default: callers iterate these rows, and
    # iterating Arrow strings one by one cost ~4× as much (measured on 800k rows).
    frame = frame.astype({"run_id": object, "metric": object, "step": "int64", "value": float})
    return frame.sort_values(["run_id", "metric", "step"], kind="stable").reset_index(drop=True)


def _is_database(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def _chunks(items: list[T]) -> Iterable[list[T]]:
    """`items` in lists of _SQL_CHUNK: one IN (...) list per query."""
    for i in range(0, len(items), _SQL_CHUNK):
        yield items[i : i + _SQL_CHUNK]


_ENGINES: dict[str, Any] = {}


def _engine(uri: str):
    if uri not in _ENGINES:
        import sqlalchemy

        _ENGINES[uri] = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    return _ENGINES[uri]


def _histories_sql(uri: str, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Rows of MLflow's `metrics` table in the order get_metric_history returns them (by
    timestamp, step, value) within a run and metric; the caller's stable sort keeps that order.

    The rows come through the driver's own cursor: SQLAlchemy's per-row objects cost more than
    the query on a big read (1.1 s of 1.9 s for 800k rows, measured)."""
    import numpy as np
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    table, engine = SqlMetric.__table__, _engine(uri)
    # For `key IN (...)` SQLite's planner picks the primary key's (key, ...) index, which walks
    # every run's rows of those keys (3.5x slower on a 12,000-run store); `key || ''` cannot use
    # it, so the lookup goes by run_uuid, the selective column.
    key = table.c.key.concat("") if engine.dialect.name == "sqlite" else table.c.key
    columns = [table.c.run_uuid, table.c.key, table.c.step, table.c.value, table.c.is_nan]
    rows: list[tuple] = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for chunk in _chunks(run_ids):
            query = (
                sqlalchemy.select(*columns)
                .where(table.c.run_uuid.in_(chunk), key.in_(keys))
                .order_by(table.c.run_uuid, table.c.key, table.c.timestamp, table.c.step, table.c.value)
            )
            compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
            params = compiled.params
            cursor.execute(
                str(compiled), [params[p] for p in compiled.positiontup] if compiled.positional else params
            )
            rows += cursor.fetchall()
    finally:
        raw.close()
    # One object array of the rows, then its columns: DataFrame.from_records on 800k tuples
    # took 3x as long (it infers each column's type row by row).
    cells = np.array(rows, dtype=object).reshape(len(rows), len(columns))
    value = cells[:, 3].astype(float)
    return pd.DataFrame(
        {
            "run_id": pd.Series(cells[:, 0], dtype=object),
            "metric": pd.Series(cells[:, 1], dtype=object),
            "step": cells[:, 2].astype("int64"),
            "value": np.where(cells[:, 4].astype(bool), math.nan, value),
        }
    )
