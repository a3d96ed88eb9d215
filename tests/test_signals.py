"""Ctrl-C and SIGTERM on real commands: in-flight trials end FAIL (retried on resume), their
MLflow runs and the parent KILLED, exit 130/143, no warnings. The tests wait for trials to be
running by polling the storage, never by sleeping a fixed time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from adrlab import tracking
from adrlab.config import compose
from adrlab.sweep.runner import (
    ATTR_FAIL_REASON,
    ATTR_RETRY_OF,
    TAG_SWEEP,
    TAG_SWEEP_PARENT,
    TAG_TRIAL,
    open_storage,
)
from tests.conftest import TINY
from tests.test_sweep import load, write_spec

SRC = str(Path(__file__).resolve().parents[1] / "src")


def start(args: list[str]) -> subprocess.Popen:
    """The command in its own process group and session, as a terminal runs a foreground job."""
    env = {**os.environ, "PYTHONPATH": SRC, "ADRLAB_QUIET": "1"}
    # Create the MLflow store now: the test's polling and the command creating it at once collide.
    tracking.search_runs(tracking.tracking_uri(compose([])), ["none"])
    return subprocess.Popen(
        [sys.executable, "-m", "adrlab.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_until(predicate, proc: subprocess.Popen, timeout: float = 240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            found = predicate()
        except Exception:  # the store is being created; poll again
            found = None
        if found:
            return found
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"timed out: {proc.communicate()[0]}")


def two_trials_training(path: Path):
    """Both workers are inside train(): two RUNNING trials whose MLflow runs exist."""
    running = [
        t for t in load(path).get_trials(states=(TrialState.RUNNING,)) if "run_id_seed0" in t.user_attrs
    ]
    return running if len(running) == 2 else None


def sweep_runs(name: str):
    uri = tracking.tracking_uri(compose([]))
    return tracking.search_runs(uri, [f"sweep-{name}"], f"tags.`{TAG_SWEEP}` = '{name}'")


def check_stopped(path: Path, name: str, interrupted: list[optuna.trial.FrozenTrial], reason: str) -> None:
    study = load(path)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    for trial in interrupted:
        after = study.trials[trial.number]
        assert after.state == TrialState.FAIL and after.user_attrs[ATTR_FAIL_REASON] == reason
        assert any(
            w.user_attrs.get(ATTR_RETRY_OF) == trial.number and w.system_attrs["fixed_params"] == after.params
            for w in waiting
        )
    assert not study.get_trials(states=(TrialState.RUNNING,))
    runs = sweep_runs(name)
    parent = runs[runs[f"tags.{TAG_SWEEP_PARENT}"].notna()]
    assert list(parent["status"]) == ["KILLED"] and parent.iloc[0][f"tags.{tracking.TAG_FAILURE}"] == reason
    children = runs[runs[f"tags.{TAG_TRIAL}"].isin([str(t.number) for t in interrupted])]
    assert len(children) == 2 and (children["status"] == "KILLED").all()
    assert not (runs["status"] == "RUNNING").any()


@pytest.mark.parametrize(
    "send, code, reason",
    [
        (lambda p: os.killpg(p.pid, signal.SIGINT), 130, "interrupted"),  # Ctrl-C: the whole group
        (lambda p: os.kill(p.pid, signal.SIGTERM), 143, "terminated"),  # kill / a scheduler: the command
    ],
    ids=["sigint-to-group", "sigterm-to-command"],
)
def test_signal_stops_a_two_worker_sweep_cleanly(tmp_path, runs_dir, send, code, reason) -> None:
    name = f"sig{code}"
    path = write_spec(
        tmp_path, name, n_trials=4, base={"overrides": ["optimizer=adamw", *TINY, "trainer.epochs=200"]}
    )
    proc = start(["sweep", str(path), "--workers", "2", "--no-report"])
    interrupted = wait_until(lambda: two_trials_training(path), proc)
    send(proc)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == code, out
    assert "leaked semaphore" not in out and "Traceback" not in out and "Warning" not in out, out
    assert "resume" in out
    check_stopped(path, name, interrupted, reason)


def test_sigterm_on_adrlab_run_marks_the_run_killed(tmp_path, runs_dir) -> None:
    proc = start(["run", *TINY, "trainer.epochs=500", "tracking.experiment=sigterm-run"])
    uri = tracking.tracking_uri(compose([]))

    def training():
        runs = tracking.search_runs(uri, ["sigterm-run"])
        return not runs.empty and "metrics.val_ppl" in runs and runs["metrics.val_ppl"].notna().any()

    wait_until(training, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "Traceback" not in out, out
    run = tracking.search_runs(uri, ["sigterm-run"]).iloc[0]
    assert run["status"] == "KILLED" and run[f"tags.{tracking.TAG_STATE}"] == "KILLED"


def test_sigterm_on_adrlab_adr_run_stops_its_job_study_cleanly(tmp_path, runs_dir) -> None:
    from tests.test_adr_e2e import ADR

    overrides = ", ".join(f'"{o}"' for o in [*TINY, "trainer.epochs=300"])
    adr = tmp_path / "0042-tiny.md"
    adr.write_text(ADR.format(overrides=overrides))
    proc = start(["adr", "run", str(adr), "--workers", "2"])

    def training():
        journals = list((runs_dir / "optuna").glob("adr-0042-smoke-*.journal"))
        if not journals:
            return None
        study = optuna.load_study(study_name=journals[0].stem, storage=open_storage(str(journals[0])))
        running = [
            t
            for t in study.get_trials(states=(TrialState.RUNNING,))
            if "run_id_seed1" in t.user_attrs or "run_id_seed2" in t.user_attrs
        ]
        return (study, running) if len(running) == 2 else None

    study, running = wait_until(training, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 143, out
    assert "Traceback" not in out and "leaked semaphore" not in out, out
    for trial in running:
        assert study.trials[trial.number].state == TrialState.FAIL
    runs = tracking.search_runs(tracking.tracking_uri(compose([])), ["adr-0042"])
    assert (
        not (runs["status"] == "RUNNING").any() and (runs["status"] == "KILLED").sum() >= 3
    )  # 2 jobs + parent
