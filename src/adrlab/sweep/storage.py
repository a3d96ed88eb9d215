"""Where a study lives: Optuna storages (a journal file on one machine, an RDB across many),
how they are shown without secrets, and the lock under which nodes that start together
create the schema, the study and the MLflow parent run exactly once.

The runner (which trains trials) and the report (which reads them) both need these; keeping
them here lets the report read a study without importing the runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna

from adrlab import tracking
from adrlab.config import project_root

T = TypeVar("T")

# Trial user attributes: the worker (host:pid) that owns a trial, why it failed, and which
# trial a re-enqueued one retries.
ATTR_WORKER = "worker"
ATTR_FAIL_REASON = "fail_reason"
ATTR_RETRY_OF = "retry_of"
# Study user attributes: what the study was run with, so `report --study FULLNAME` needs nothing else.
STUDY_SPEC = "adrlab.spec"
STUDY_OVERRIDES = "adrlab.overrides"
STUDY_N_TRIALS = "adrlab.n_trials"
STUDY_FAMILY = "adrlab.family"  # the spec's own name, without the overrides' hash
# Any fixed 63-bit number: the PostgreSQL advisory lock that serialises study creation.
_CREATE_LOCK_KEY = 0x0AD21AB_5EED


def default_storage_url(spec) -> str:
    """The journal of a study on this machine (spec: a SweepSpec or a study's full name)."""
    name = getattr(spec, "name", spec)
    path = tracking.runs_dir() / "optuna" / f"{name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def is_rdb(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def shown_storage(url: str, *, relative: bool = True) -> str:
    """The storage as printed, tagged and written into reports: an RDB URL without its
    password; a journal file relative to the working directory (relative=True, for people)
    or as `storage_identity` gives it (for tags)."""
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


def storage_identity(url: str) -> str:
    """The storage as recorded in shared records (MLflow tags): an RDB URL without password,
    a journal file relative to the project root when it lies below it (never a node's home)."""
    if is_rdb(url):
        return shown_storage(url)
    return project_relative(Path(url))


def project_relative(path: Path) -> str:
    """A file as shared records name it: relative to the project root, or (outside it) its
    name and content hash, which every node can check and none has to share a path for."""
    path = path.resolve()
    try:
        return str(path.relative_to(project_root()))
    except ValueError:
        if path.is_file():
            return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
        return path.name


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace) in seconds for RDB storages."""
    return (
        int(os.environ.get("ADRLAB_HEARTBEAT_INTERVAL", "5")),
        int(os.environ.get("ADRLAB_HEARTBEAT_GRACE", "20")),
    )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB URLs (postgresql://, mysql://) get heartbeats and a retry of stale trials;
    anything else is a journal file, which is safe for many processes on one machine."""
    if is_rdb(url):
        interval, grace = heartbeat_settings()
        return with_creation_retry(
            lambda: optuna.storages.RDBStorage(
                url,
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                engine_kwargs={"pool_pre_ping": True},
            )
        )
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = url.removeprefix("file://")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(path))


def is_creation_race(exc: BaseException) -> bool:
    """The errors two creators of one schema or study raise (seen on PostgreSQL: a unique
    violation on `CREATE TYPE studydirection`, a duplicate table, a duplicate study name)."""
    text = f"{type(exc).__name__} {exc}".lower()
    markers = ("uniqueviolation", "unique constraint", "duplicate", "already exists", "integrityerror")
    return isinstance(exc, optuna.exceptions.DuplicatedStudyError) or any(m in text for m in markers)


def with_creation_retry(fn: Callable[[], T], attempts: int = 6) -> T:
    """Run a create-if-missing step again when a concurrent creator won the race: the second
    try finds what the winner made."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_creation_race(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1) * (1 + random.random()))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Held while a node creates or loads the schema, the study, the MLflow experiment and the
    parent run: nodes that start in the same second then find one another's work instead of
    racing. PostgreSQL: a session advisory lock; a journal: an flock beside the file; other
    RDBs rely on `with_creation_retry` alone."""
    if is_rdb(url) and url.startswith("postgresql"):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _CREATE_LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _CREATE_LOCK_KEY})
        finally:
            engine.dispose()
    elif not is_rdb(url):
        import fcntl

        lock = Path(url.removeprefix("file://") + ".create.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield
