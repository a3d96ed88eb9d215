"""Where a sweep's Optuna study lives, and the user attributes its trials carry.

The runner (which trains trials) and the report (which reads them) both need these; keeping
them here lets the report read a study without importing the runner.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from adrlab import tracking
from adrlab.sweep.spec import SweepSpec

# Trial user attributes: the worker (host:pid) that owns a trial, why it failed, and which
# trial a re-enqueued one retries.
ATTR_WORKER = "worker"
ATTR_FAIL_REASON = "fail_reason"
ATTR_RETRY_OF = "retry_of"


def default_storage_url(spec: SweepSpec) -> str:
    path = tracking.runs_dir() / "optuna" / f"{spec.name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def is_rdb(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def shown_storage(url: str, *, relative: bool = True) -> str:
    """The storage as printed, tagged and written into reports: an RDB URL without its
    password; a journal file as an absolute path, or (relative=True, for people) relative
    to the working directory when it lies below it. Tags use the absolute form: it is the
    study's identity wherever the command runs from."""
    if is_rdb(url):
        from sqlalchemy.engine import make_url

        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # not an SQLAlchemy URL; say nothing that could hold a secret
            return url.split("://", 1)[0] + "://…"
    path = Path(url).resolve()
    if not relative:
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB URLs (postgresql://, mysql://) get heartbeats and a retry of stale trials;
    anything else is a journal file, which is safe for many processes on one machine."""
    if is_rdb(url):
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=int(os.environ.get("ADRLAB_HEARTBEAT_INTERVAL", "5")),
            grace_period=int(os.environ.get("ADRLAB_HEARTBEAT_GRACE", "20")),
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            engine_kwargs={"pool_pre_ping": True},
        )
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = url.removeprefix("file://")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(path))
