"""MLflow: the one place that writes runs and the one place that reads them back.

Writes go through `RunLogger`, which buffers metrics and sends them with `log_batch`
(one REST/SQL call per flush instead of one per point) and retries the "database is
locked" errors that several workers sharing one SQLite file can hit. Reads go through
`search_runs` / `metric_history`, which return pandas frames; sweeps, ADR reports and
criteria all use them.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
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


def ensure_experiment(uri: str, name: str, cfg: DictConfig | None = None) -> str:
    """Experiment id for `name`, created if needed (race-safe: a concurrent creator wins)."""
    c = client(uri)
    existing = with_retry(lambda: c.get_experiment_by_name(name))
    if existing is not None:
        return existing.experiment_id
    location = artifact_root(cfg) if uri.startswith("sqlite") else None
    try:
        return with_retry(lambda: c.create_experiment(name, artifact_location=location))
    except Exception:
        again = c.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


def git_sha() -> str:
    try:
        root = project_root()
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

    def artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        with_retry(lambda: self.client.log_artifact(self.run_id, str(local_path), artifact_path))

    def finish(self, status: str) -> None:
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
    """
    import mlflow

    c = client(uri)
    if experiments is None:
        ids = [e.experiment_id for e in with_retry(c.search_experiments)]
    else:
        ids = [e.experiment_id for name in experiments if (e := c.get_experiment_by_name(name)) is not None]
    if not ids:
        return pd.DataFrame()
    # mlflow.search_runs reads the fluent tracking URI, and set_tracking_uri also exports
    # MLFLOW_TRACKING_URI: restore both so this read never redirects later writes.
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        frame = mlflow.search_runs(experiment_ids=ids, filter_string=filter_string, output_format="pandas")
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
    if statuses is not None and not frame.empty:
        frame = frame[frame["status"].isin(list(statuses))]
    return frame.reset_index(drop=True)


def metric_history(uri: str, run_id: str, keys: Iterable[str]) -> pd.DataFrame:
    """Long frame (metric, step, value) of the given metrics for one run."""
    c = client(uri)
    rows = [
        (key, m.step, m.value)
        for key in keys
        for m in with_retry(lambda key=key: c.get_metric_history(run_id, key))
    ]
    frame = pd.DataFrame(rows, columns=["metric", "step", "value"])
    return frame.sort_values(["metric", "step"], kind="stable").reset_index(drop=True)
