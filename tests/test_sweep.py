"""Sweeps against real Optuna storages (journal file; PostgreSQL when available) and MLflow."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from adrlab import tracking
from adrlab.config import compose
from adrlab.sweep.report import sensitivity_lines
from adrlab.sweep.runner import (
    ATTR_RETRY_OF,
    TAG_SWEEP,
    TAG_TRIAL,
    budget_claimed,
    open_storage,
    run_sweep,
    shown_storage,
)
from adrlab.sweep.spec import SpecError, load_spec
from tests.conftest import TINY

POSTGRES = os.environ.get("ADRLAB_TEST_POSTGRES_URL")


def write_spec(tmp_path: Path, name: str, **changes) -> Path:
    spec = {
        "name": name,
        "base": {"overrides": ["optimizer=adamw", *TINY]},
        "space": {
            "regularizer.weight_decay": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
            "lr_schedule": {"type": "categorical", "choices": ["constant", "cosine"]},
        },
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 2},
        "pruner": {"name": "none"},
        "n_trials": 4,
        "objective": {"metric": "val_ppl", "statistic": "best", "direction": "minimize"},
        "seeds": [0],
        "tracking": {"experiment": f"sweep-{name}"},
    }
    spec.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def load(path: Path, storage: str | None = None) -> optuna.Study:
    spec = load_spec(str(path))
    url = storage or str(tracking.runs_dir() / "optuna" / f"{spec.name}.journal")
    return optuna.load_study(study_name=spec.name, storage=open_storage(url))


def children(spec_name: str) -> list:
    uri = tracking.tracking_uri(compose([]))
    runs = tracking.search_runs(uri, [f"sweep-{spec_name}"], f"tags.`{TAG_SWEEP}` = '{spec_name}'")
    if runs.empty or f"tags.{TAG_TRIAL}" not in runs:
        return runs.iloc[0:0].assign(**{f"tags.{TAG_TRIAL}": [], "status": []})
    return runs[runs[f"tags.{TAG_TRIAL}"].notna()]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (
            {"space": {"optimizer.nope": {"type": "float", "low": 0.1, "high": 1}}},
            "space.optimizer.nope: no such config path",
        ),
        (
            {"space": {"regularizer.weight_decay": {"type": "float", "low": 1, "high": 0.1}}},
            "low=1.0 must be < high=0.1",
        ),
        (
            {"space": {"regularizer.weight_decay": {"type": "float", "low": 0, "high": 1, "log": True}}},
            "log range needs low > 0",
        ),
        (
            {"sampler": {"name": "annealing"}},
            "sampler.name='annealing' is not valid; choose one of: tpe, random, grid, gp",
        ),
        ({"pruner": {"name": "patient"}}, "pruner.name='patient' is not valid"),
        (
            {"space": {"lr_schedule": {"type": "categorical", "choices": ["constant", "nope"]}}},
            "unknown option(s) ['nope']",
        ),
        (
            {"objective": {"metric": "val_ppl", "statistic": "median"}},
            "objective.statistic='median' is not valid",
        ),
        ({"space": {"x": {"type": "gaussian"}}}, "space.x.type='gaussian' is not valid"),
        ({"n_trails": 3}, "unknown key(s) ['n_trails']"),
        (
            {
                "space": {
                    "wd_schedule": {"type": "categorical", "choices": ["constant", "dynamic"]},
                    "wd_schedule.decay_factor": {
                        "type": "float",
                        "low": 0.5,
                        "high": 0.9,
                        "when": {"wd_schedule": "follow"},
                    },
                }
            },
            "never takes ['follow']",
        ),
    ],
)
def test_spec_errors_name_the_key(tmp_path, runs_dir, changes, fragment) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(str(write_spec(tmp_path, "bad", **changes)))
    assert fragment in str(exc.value)


def test_conditional_path_is_checked_in_its_condition(tmp_path, runs_dir) -> None:
    space = {
        "regularizer": {"type": "categorical", "choices": ["decoupled"]},
        "wd_schedule": {"type": "categorical", "choices": ["constant", "dynamic"]},
        "wd_schedule.decay_factor": {
            "type": "float",
            "low": 0.5,
            "high": 0.9,
            "when": {"wd_schedule": "dynamic"},
        },
    }
    spec = load_spec(str(write_spec(tmp_path, "cond", space=space)))
    assert spec.space[2].when == {"wd_schedule": ["dynamic"]}


def test_default_spec_is_valid(runs_dir) -> None:
    spec = load_spec("lambda_schedule")
    assert spec.sampler["name"] == "tpe" and spec.pruner["name"] == "median"
    assert {"regularizer.weight_decay", "lr_schedule", "wd_schedule"} <= set(spec.keys)


def test_shown_storage_hides_passwords_and_shortens_local_paths(tmp_path, monkeypatch) -> None:
    shown = shown_storage("postgresql+psycopg://optuna:s3cret@db.lab:5432/studies")
    assert "s3cret" not in shown and "db.lab:5432/studies" in shown
    monkeypatch.chdir(tmp_path)
    journal = tmp_path / "runs" / "optuna" / "x.journal"
    assert shown_storage(str(journal)) == str(Path("runs/optuna/x.journal"))
    assert shown_storage(str(journal), relative=False) == str(journal.resolve())


def test_sensitivity_lists_pruned_only_schedules_and_names_the_winner(tmp_path) -> None:
    import pandas as pd

    spec = load_spec(str(write_spec(tmp_path, "sens")))
    table = pd.DataFrame(
        [
            {"state": "COMPLETE", "value": 5.0, "p:regularizer.weight_decay": 0.1, "p:lr_schedule": "cosine"},
            {"state": "COMPLETE", "value": 5.1, "p:regularizer.weight_decay": 0.3, "p:lr_schedule": "cosine"},
            {"state": "COMPLETE", "value": 9.0, "p:regularizer.weight_decay": 0.9, "p:lr_schedule": "cosine"},
            {
                "state": "PRUNED",
                "value": 7.0,
                "p:regularizer.weight_decay": 0.02,
                "p:lr_schedule": "constant",
            },
        ]
    )
    text = "\n".join(sensitivity_lines(table, spec))
    assert "| cosine | 3 | 0 | 5 | 0.1 | 0.1 – 0.3 | 1.800 |" in text
    assert "| constant | 0 | 1 | pruned (last 7) |" in text
    assert "Winner: cosine at λ = 0.1 (5). 2 of 3 completed trials" in text
    assert "Within 1%" not in text  # the runner-up is a pruned schedule 40% behind

    close = {"state": "COMPLETE", "value": 5.04, "p:lr_schedule": "constant"}
    close["p:regularizer.weight_decay"] = 0.2
    text = "\n".join(sensitivity_lines(pd.concat([table, pd.DataFrame([close])]), spec))
    assert "Within 1% of the winner: constant (5.04); with 1 seed(s) a trial" in text


def test_budget_counts_running_trials_of_live_workers_only(tmp_path) -> None:
    storage = open_storage(str(tmp_path / "budget.journal"))
    study = optuna.create_study(study_name="budget", storage=storage)
    study.tell(study.ask(), 1.0)
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    running = {"dead": f"{host}:{dead.pid}", "alive": f"{host}:{os.getpid()}"}
    for owner in running.values():
        study.ask().set_user_attr("worker", owner)
    # 1 complete + 1 running on a live worker; the dead worker's trial holds no budget.
    assert budget_claimed(study, 2) and not budget_claimed(study, 3)
    study.ask().set_user_attr("worker", "other-node:1")  # another host: its heartbeat decides
    assert budget_claimed(study, 3)
    study.enqueue_trial({})  # a waiting retry holds no budget: whoever asks next pops it
    assert budget_claimed(study, 3)


# --------------------------------------------------------------------------- runs


def test_two_workers_on_the_journal_storage(tmp_path, runs_dir) -> None:
    path = write_spec(tmp_path, "journal4")
    outcome = run_sweep(str(path), workers=2)
    # A worker that finishes early counts the trials still running, so none runs past the budget.
    assert outcome.counted == 4 and outcome.exit_codes == [0, 0]
    study = load(path)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(study.trials) == len(complete) == 4
    runs = children("journal4")
    assert set(runs[f"tags.{TAG_TRIAL}"].astype(int)) >= {t.number for t in complete}
    assert (runs["tags.mlflow.parentRunId"] == outcome.parent_run_id).all()
    assert len({w for t in complete if (w := t.user_attrs.get("worker"))}) == 2  # both workers took trials
    report = runs_dir.parent / "reports" / "sweeps" / "journal4"
    assert (report / "README.md").is_file() and (report / "history.png").is_file()


def test_rerun_resumes_and_keeps_completed_trials(tmp_path, runs_dir) -> None:
    path = write_spec(tmp_path, "resume", n_trials=2)
    run_sweep(str(path), workers=1, write_report=False)
    first = {t.number: t.value for t in load(path).trials if t.state == TrialState.COMPLETE}
    run_sweep(str(path), workers=1, n_trials=3, write_report=False)
    study = load(path)
    again = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(again) == 3 and all(again[n] == v for n, v in first.items())
    run_sweep(str(path), workers=1, n_trials=3, write_report=False)  # nothing left to do
    assert len(load(path).trials) == 3


def test_pruning_prunes_a_clearly_bad_trial(tmp_path, runs_dir) -> None:
    good = {"regularizer.weight_decay": 0.1, "lr_schedule": "constant"}
    path = write_spec(
        tmp_path,
        "prune",
        n_trials=3,
        base={"overrides": ["optimizer=adamw", *TINY, "trainer.epochs=3"]},
        space={
            "regularizer.weight_decay": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
            "lr_schedule": {"type": "categorical", "choices": ["constant", "cosine"]},
            "optimizer.lr": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True},
        },
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        enqueue=[
            {**good, "optimizer.lr": 3e-3},
            {**good, "optimizer.lr": 2e-3},
            {**good, "optimizer.lr": 1e-7},
        ],
    )
    run_sweep(str(path), workers=1, write_report=False)
    trials = load(path).trials
    bad = next(t for t in trials if t.params["optimizer.lr"] == 1e-7)
    assert bad.state == TrialState.PRUNED and len(bad.intermediate_values) == 1
    run = children("prune")
    row = run[run[f"tags.{TAG_TRIAL}"] == str(bad.number)].iloc[0]
    assert row["status"] == "KILLED" and row[f"tags.{tracking.TAG_STATE}"] == "PRUNED"
    assert "median pruner at epoch 1" in row["tags.prune_reason"]


def test_cache_reuses_finished_runs_visibly(tmp_path, runs_dir) -> None:
    point = [{"regularizer.weight_decay": 0.1, "lr_schedule": "constant"}]
    shared = {"tracking": {"experiment": "sweep-shared"}, "n_trials": 1, "enqueue": point}
    run_sweep(str(write_spec(tmp_path, "first", **shared)), workers=1, write_report=False)
    run_sweep(str(write_spec(tmp_path, "second", **shared)), workers=1, write_report=False)
    run_sweep(str(write_spec(tmp_path, "third", **shared)), workers=1, write_report=False, reuse=False)
    uri = tracking.tracking_uri(compose([]))
    runs = tracking.search_runs(uri, ["sweep-shared"]).set_index(f"tags.{TAG_SWEEP}")
    runs = runs[runs[f"tags.{TAG_TRIAL}"].notna()]
    assert runs.loc["second", f"tags.{tracking.TAG_REUSED_FROM}"] == runs.loc["first", "run_id"]
    assert (
        runs.loc["third"].get(f"tags.{tracking.TAG_REUSED_FROM}") is None
        or str(runs.loc["third", f"tags.{tracking.TAG_REUSED_FROM}"]) == "nan"
    )


def _kill_one_worker_mid_trial(path: Path, storage: str | None, extra_env: dict[str, str]) -> int:
    """Start `adrlab sweep` with 2 workers, SIGKILL one worker while it trains; return the trial number."""
    env = {**os.environ, **extra_env}
    cmd = [sys.executable, "-m", "adrlab.cli", "sweep", str(path), "--workers", "2", "--no-report"]
    if storage:
        cmd += ["--storage", storage]
    children("none")  # create the MLflow store now: two processes creating it at once collide
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and killed is None:
        time.sleep(0.2)
        try:
            study = load(path, storage)
        except KeyError:
            continue
        running = {str(t.number): t for t in study.get_trials(states=(TrialState.RUNNING,))}
        if not running:
            continue
        runs = children(load_spec(str(path)).name)
        if runs.empty:
            continue
        training = runs[(runs["status"] == "RUNNING") & runs[f"tags.{TAG_TRIAL}"].isin(list(running))]
        if not training.empty:  # its MLflow run exists: the worker is inside the training loop
            trial = running[training.iloc[0][f"tags.{TAG_TRIAL}"]]
            os.kill(int(trial.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
            killed = trial.number
    out, _ = proc.communicate(timeout=300)
    assert killed is not None, out
    assert "Traceback" not in out, out
    return killed


def _check_recovered(path: Path, storage: str | None, killed: int, before: set[tuple[int, float]]) -> None:
    study = load(path, storage)
    states = {t.number: t.state for t in study.trials}
    assert states[killed] == TrialState.FAIL
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 6
    assert before <= {(t.number, t.value) for t in complete}  # no completed trial lost
    retried = [
        t
        for t in complete
        if t.user_attrs.get(ATTR_RETRY_OF) == killed or t.system_attrs.get("failed_trial") == killed
    ]
    assert retried and retried[0].params == study.trials[killed].params
    runs = children(load_spec(str(path)).name)
    run_id = study.trials[killed].user_attrs.get("run_id_seed0")  # the killed trial names its run
    if run_id is None:  # killed in the instant between creating its run and recording it
        run_id = runs[runs[f"tags.{TAG_TRIAL}"] == str(killed)].iloc[0]["run_id"]
    killed_run = runs[runs["run_id"] == run_id].iloc[0]
    if retried[0].user_attrs.get("run_id_seed0") == run_id:  # the retry resumed it from its checkpoint
        assert killed_run["status"] == "FINISHED" and killed_run[f"tags.{TAG_TRIAL}"] == str(
            retried[0].number
        )
    else:
        assert killed_run["status"] == "KILLED"
    assert not (runs["status"] == "RUNNING").any()


def test_sigkill_a_worker_then_rerun_journal(tmp_path, runs_dir) -> None:
    path = write_spec(
        tmp_path, "killj", n_trials=6, base={"overrides": ["optimizer=adamw", *TINY, "trainer.epochs=40"]}
    )
    killed = _kill_one_worker_mid_trial(path, None, {"ADRLAB_RUNS_DIR": str(runs_dir)})
    before = {(t.number, t.value) for t in load(path).trials if t.state == TrialState.COMPLETE}
    outcome = run_sweep(str(path), workers=2, write_report=False)
    assert killed in outcome.recovered or outcome.recovered == []  # may already be recovered by the first run
    _check_recovered(path, None, killed, before)


@pytest.mark.postgres
@pytest.mark.skipif(
    not POSTGRES, reason="set ADRLAB_TEST_POSTGRES_URL (CI starts PostgreSQL via .ci/postgres.sh)"
)
def test_two_workers_and_sigkill_on_postgres(tmp_path, runs_dir, monkeypatch) -> None:
    import sqlalchemy

    name = f"pg{os.getpid()}"
    engine = sqlalchemy.create_engine(POSTGRES)
    with engine.begin() as conn:  # a fresh schema-less start: drop Optuna's tables from earlier runs
        for table in (
            "trial_heartbeats",
            "trial_intermediate_values",
            "trial_values",
            "trial_user_attributes",
            "trial_system_attributes",
            "trial_params",
            "trials",
            "study_user_attributes",
            "study_system_attributes",
            "study_directions",
            "studies",
            "version_info",
            "alembic_version",
        ):
            conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    engine.dispose()
    monkeypatch.setenv("ADRLAB_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("ADRLAB_HEARTBEAT_GRACE", "3")
    path = write_spec(
        tmp_path, name, n_trials=6, base={"overrides": ["optimizer=adamw", *TINY, "trainer.epochs=40"]}
    )
    killed = _kill_one_worker_mid_trial(
        path,
        POSTGRES,
        {"ADRLAB_RUNS_DIR": str(runs_dir), "ADRLAB_HEARTBEAT_INTERVAL": "1", "ADRLAB_HEARTBEAT_GRACE": "3"},
    )
    before = {(t.number, t.value) for t in load(path, POSTGRES).trials if t.state == TrialState.COMPLETE}
    time.sleep(4)  # let the heartbeat of the killed trial go stale
    run_sweep(str(path), workers=2, storage=POSTGRES, write_report=False)
    _check_recovered(path, POSTGRES, killed, before)
