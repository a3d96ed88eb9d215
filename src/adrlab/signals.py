"""SIGINT and SIGTERM as exceptions, so one cleanup path serves Ctrl-C, `kill` and a
scheduler's stop alike: `train()` marks its run KILLED on KeyboardInterrupt, a sweep marks
its in-flight trials FAIL (retried on resume) and its parent run KILLED."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where it lands. A KeyboardInterrupt, so every handler of Ctrl-C
    (train()'s KILLED marking among them) handles a `kill` or a scheduler's stop too."""


def exit_code(exc: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _ignore(_signum: int, _frame) -> None:
    """A Python-level no-op rather than SIG_IGN: a signal already pending when the handler
    changes would otherwise surface as "OSError: Signal 15 ignored due to race condition"."""


def _raise_once(signum: int, _frame) -> None:
    # Later signals are ignored: the cleanup the first one started must run to its end.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


_pending: int | None = None  # a signal recorded by the deferred handler, not raised yet


def _record_once(signum: int, _frame) -> None:
    global _pending
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    _pending = signum


def is_pending() -> bool:
    return _pending is not None


def raise_if_pending() -> None:
    """Raise the signal a deferred handler recorded (once), at a point the caller knows is safe."""
    global _pending
    signum, _pending = _pending, None
    if signum is not None:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install(*, deferred: bool = False) -> None:
    """From now on the first SIGINT raises KeyboardInterrupt and the first SIGTERM raises
    Terminated (main thread only; for processes that end with the command, e.g. workers).

    deferred: the handler only records the signal and `raise_if_pending()` raises it. A sweep
    worker needs this: raised wherever it lands, the interrupt can hit Optuna's journal-file
    lock between its rename and unlink, which leaves the lock file gone and turns the clean
    stop into a FileNotFoundError traceback. The training loop checks every step, so the stop
    still comes within one step."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _record_once if deferred else _raise_once)


@contextlib.contextmanager
def raised_as_exceptions() -> Iterator[None]:
    """`install()` for the duration of a block, restoring the previous handlers after it (so
    a library caller such as a test keeps its own). Outside the main thread: no change."""
    try:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        install()
    except ValueError:  # signal only works in the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
