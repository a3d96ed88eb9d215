"""Several nodes as a cluster runs them: separate project roots, each node in its own UTS
namespace (its own hostname) where `unshare` allows, one PostgreSQL study on a fresh database,
one MLflow tracking server (.ci/mlflow-server.sh), all nodes started in the same second.

docs/multinode.md describes exactly what this test does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from adrlab import tracking
from adrlab.sweep.runner import TAG_SWEEP_PARENT, TAG_TRIAL, counted_trials, open_storage, shown_storage
from tests.conftest import TINY
from tests.test_adr_e2e import ADR
from tests.test_sweep import write_spec

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("ADRLAB_TEST_POSTGRES_URL")
MLFLOW = os.environ.get("ADRLAB_TEST_MLFLOW_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not (POSTGRES and MLFLOW),
        reason="set ADRLAB_TEST_POSTGRES_URL and ADRLAB_TEST_MLFLOW_URL (.ci/run starts both)",
    ),
]


def can_unshare() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "-u", "true"]).returncode == 0


@pytest.fixture
def fresh_database() -> str:
    """A new, empty PostgreSQL database for the study (dropped afterwards)."""
    import sqlalchemy

    name = f"adrlab_mn_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(
        sqlalchemy.engine.make_url(POSTGRES).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_root(base: Path, name: str, files: dict[str, str]) -> Path:
    """A node's own checkout: the configs copied, plus the given files (spec, ADR)."""
    root = base / name
    shutil.copytree(REPO / "conf", root / "conf")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def start_node(root: Path, hostname: str, args: list[str], **env_extra: str) -> subprocess.Popen:
    """`adrlab ARGS` as a node runs it: its own root, runs folder, hostname and process group."""
    env = {
        **os.environ,
        "ADRLAB_ROOT": str(root),
        "ADRLAB_RUNS_DIR": str(root / "runs"),
        "ADRLAB_REPORTS_DIR": str(root / "reports"),
        "MLFLOW_TRACKING_URI": str(MLFLOW),
        "ADRLAB_HEARTBEAT_INTERVAL": "1",
        "ADRLAB_HEARTBEAT_GRACE": "4",
        "ADRLAB_QUIET": "1",
        "PYTHONPATH": str(REPO / "src"),
        **env_extra,
    }
    cmd = [sys.executable, "-m", "adrlab.cli", *args]
    if can_unshare():
        cmd = ["unshare", "-u", "sh", "-c", f'hostname {hostname} && exec "$@"', "node", *cmd]
    return subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_epoch_on(
    study: optuna.Study, node: subprocess.Popen, timeout: float = 150
) -> optuna.trial.FrozenTrial:
    """Poll the storage (no fixed sleeps) until one of the node's workers has a trial with an
    epoch reported (so its checkpoint exists); its workers share the node's process group."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = str(trial.user_attrs.get("worker", "")).rpartition(":")[2]
            try:
                mine = pid.isdigit() and os.getpgid(int(pid)) == node.pid
            except ProcessLookupError:
                mine = False
            if mine and trial.intermediate_values:
                return trial
        assert node.poll() is None, node.communicate()[0]
        time.sleep(0.3)
    raise AssertionError("no trial of the node reached its first epoch")


def finish(nodes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [
        (n.returncode if n.poll() is not None else n.wait(240), n.communicate(timeout=240)[0]) for n in nodes
    ]


def sweep_changes() -> dict:
    """tests/test_sweep.py's spec, with trials long enough to be killed after an epoch."""
    base = ["optimizer=adamw", *TINY, "trainer.epochs=8", "trainer.log_every=50"]
    return {
        "base": {"overrides": base},
        "n_trials": 6,
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 10},
    }


def test_three_nodes_start_together_one_is_killed_the_study_completes(tmp_path, fresh_database) -> None:
    name = f"mn{uuid.uuid4().hex[:6]}"
    checkpoints = tmp_path / "shared-checkpoints"  # a filesystem all nodes share
    roots = [make_root(tmp_path, f"node{i}", {}) for i in range(3)]
    for root in roots:
        (root / "sweeps").mkdir()
        write_spec(root / "sweeps", name, **sweep_changes())
    args = ["sweep", name, "--workers", "1", "--storage", fresh_database]
    shared = {"ADRLAB_CHECKPOINT_DIR": str(checkpoints)}
    nodes = [start_node(root, f"node{i}", args, **shared) for i, root in enumerate(roots)]  # the same second

    study = None
    while study is None:  # the first node creates the study; poll the storage for it
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(fresh_database))
        except KeyError:
            time.sleep(0.3)
    victim = wait_for_epoch_on(study, nodes[2])
    os.killpg(nodes[2].pid, signal.SIGKILL)  # the node is lost mid-trial
    results = finish(nodes)

    assert [code for code, _ in results[:2]] == [0, 0], results
    assert results[2][0] == -signal.SIGKILL
    for _, out in results[:2]:
        assert "Traceback" not in out and "UniqueViolation" not in out, out
    assert sum("complete" in out.split("trials counted")[-1] for _, out in results[:2]) >= 1

    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert counted_trials(study) == 6 and sum(t.state == TrialState.COMPLETE for t in trials) == 6
    complete = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == len(complete)  # no two nodes drew the same trial
    assert study.trials[victim.number].state == TrialState.FAIL

    # The retry continued the killed trial's MLflow run from its last checkpoint (shared dir).
    retry = next(t for t in trials if t.params == victim.params and t.state == TrialState.COMPLETE)
    killed_run = study.trials[victim.number].user_attrs["run_id_seed0"]
    assert retry.user_attrs["run_id_seed0"] == killed_run

    uri = str(MLFLOW)
    runs = tracking.search_runs(uri, [f"sweep-{name}"])
    assert not (runs["status"] == "RUNNING").any()
    parents = runs[runs[f"tags.{TAG_SWEEP_PARENT}"].notna()]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    assert runs[runs[f"tags.{TAG_TRIAL}"].notna()]["status"].isin(["FINISHED", "KILLED"]).all()
    artifacts = [a.path for a in tracking.client(uri).list_artifacts(parents.iloc[0]["run_id"], "report")]
    assert "report/README.md" in artifacts and "report/history.png" in artifacts
    spec_param = tracking.client(uri).get_run(parents.iloc[0]["run_id"]).data.params["sweep.spec"]
    assert spec_param == f"sweeps/{name}.yaml"  # relative to the root, not a node's path
    assert set(runs["tags.adrlab.storage"].dropna()) == {shown_storage(fresh_database)}  # no password


def test_two_nodes_share_an_adrs_jobs(tmp_path, fresh_database) -> None:
    number = f"{uuid.uuid4().int % 9000 + 1000:04d}"
    # A config no earlier run on this server had (the run cache would serve it instead of training).
    unique = f"trainer.divergence_loss={1000 + uuid.uuid4().int % 10**6 / 10**3}"
    overrides = ", ".join(f'"{o}"' for o in [*TINY, "trainer.epochs=2", unique])
    text = ADR.format(overrides=overrides).replace("0042", number)
    adr = {f"adr/{number}-tiny.md": text}
    roots = [make_root(tmp_path, f"adrnode{i}", adr) for i in range(2)]
    nodes = [
        start_node(root, f"adrnode{i}", ["adr", "run", number, "--workers", "1", "--storage", fresh_database])
        for i, root in enumerate(roots)
    ]
    results = finish(nodes)
    assert [code for code, _ in results] == [0, 0], results

    runs = tracking.search_runs(str(MLFLOW), [f"adr-{number}"])
    trained = (
        runs[runs[f"tags.{tracking.TAG_REUSED_FROM}"].isna()]
        if f"tags.{tracking.TAG_REUSED_FROM}" in runs
        else runs
    )
    trained = trained[trained[f"tags.{tracking.TAG_ARM}"].notna()]
    pairs = list(zip(trained[f"tags.{tracking.TAG_ARM}"], trained[f"tags.{tracking.TAG_SEED}"]))
    assert sorted(pairs) == sorted({(a, s) for a in ("decayed", "plain") for s in ("1", "2")})  # each once

    report = start_node(roots[1], "adrnode1", ["report", "--adr", number])
    code, out = finish([report])[0]
    assert code in (0, 1), out  # a verdict was judged (exit 1 only flags a failed primary criterion)
    evidence = (roots[1] / "reports" / f"adr-{number}" / "runs-smoke.csv").read_text()
    assert "decayed" in evidence and "plain" in evidence
