"""One test per problem of issue 16 that needs no cluster (the cluster itself: test_multinode.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
from pathlib import Path

import optuna
import pytest
import yaml

from adrlab import cli, tracking
from adrlab.config import compose, config_hash
from adrlab.sweep.runner import (
    TAG_SWEEP_PARENT,
    check_shared_tracking,
    run_sweep,
    storage_identity,
    worker_seed_offset,
)
from adrlab.sweep.spec import SpecError
from adrlab.sweep.storage import (
    STUDY_N_TRIALS,
    creation_lock,
    is_creation_race,
    open_storage,
    project_relative,
)
from adrlab.train import checkpoint_path
from tests.conftest import TINY
from tests.test_multinode import fresh_database  # noqa: F401  (a fixture)
from tests.test_sweep import write_spec

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("ADRLAB_TEST_POSTGRES_URL")


def test_sampler_seeds_differ_across_nodes_and_stay_fixed_on_one_machine(monkeypatch) -> None:
    assert [worker_seed_offset("runs/optuna/x.journal", i) for i in range(3)] == [0, 1, 2]
    pg = "postgresql://u@db/optuna"
    monkeypatch.setattr(socket, "gethostname", lambda: "node-a")
    a0 = worker_seed_offset(pg, 0)
    monkeypatch.setattr(socket, "gethostname", lambda: "node-b")
    b0 = worker_seed_offset(pg, 0)
    assert a0 != b0  # both nodes' worker 0 used to draw the same trials
    assert 0 <= a0 < 2**31 and 0 <= b0 < 2**31  # valid numpy seeds once the spec's seed is added


def test_creation_race_errors_are_recognised() -> None:
    race = Exception(
        "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"pg_type_typname_nsp_index" [SQL: CREATE TYPE studydirection AS ENUM ...]'
    )
    assert is_creation_race(race) and not is_creation_race(ValueError("no such column"))


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="set ADRLAB_TEST_POSTGRES_URL")
def test_many_creators_on_an_empty_database(fresh_database) -> None:  # noqa: F811  (the fixture)
    """Eight threads create the schema and one study at once on a new database: one study, no error."""
    import concurrent.futures

    def create(_):
        with creation_lock(fresh_database):
            storage = open_storage(fresh_database)
            return optuna.create_study(study_name="s", storage=storage, load_if_exists=True)._study_id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(create, range(8)))) == 1


def test_a_database_as_tracking_uri_is_refused_for_many_nodes() -> None:
    with pytest.raises(SpecError) as exc:
        check_shared_tracking("postgresql://adrlab:s3cret@db/mlflow", "postgresql://adrlab:s3cret@db/optuna")
    text = str(exc.value)
    assert "s3cret" not in text and "mlflow server" in text and "MLFLOW_TRACKING_URI=http://" in text
    check_shared_tracking("http://127.0.0.1:5000", "postgresql://adrlab@db/optuna")  # the server: fine
    check_shared_tracking("postgresql://adrlab@db/mlflow", "runs/optuna/x.journal")  # one machine: fine


def test_shared_records_hold_no_node_local_path(tmp_path, runs_dir, monkeypatch) -> None:
    monkeypatch.setenv("ADRLAB_ROOT", str(tmp_path))
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "sweeps").mkdir()
    spec = write_spec(tmp_path / "sweeps", "local", n_trials=1)
    assert storage_identity(str(runs_dir / "optuna" / "x.journal")) == "runs/optuna/x.journal"
    assert storage_identity("postgresql://u:pw@db/optuna") == "postgresql://u:***@db/optuna"
    outcome = run_sweep(str(spec), workers=1, write_report=False, create_only=True)
    uri = tracking.tracking_uri(compose([]))
    params = tracking.client(uri).get_run(outcome.parent_run_id).data.params
    assert params["sweep.spec"] == "sweeps/local.yaml"
    outside = tmp_path.parent / "elsewhere.yaml"
    outside.write_text(spec.read_text())
    assert project_relative(outside).startswith("elsewhere.yaml sha256:")  # a content hash instead


def test_checkpoints_go_to_the_configured_shared_folder(tmp_path, runs_dir, monkeypatch) -> None:
    default = compose(TINY)
    shared = compose([*TINY, f"trainer.checkpoint_dir={tmp_path / 'shared'}"])
    assert checkpoint_path(default, "r1") == runs_dir / "checkpoints" / "r1" / "last.pt"
    assert checkpoint_path(shared, "r1") == tmp_path / "shared" / "r1" / "last.pt"
    monkeypatch.setenv("ADRLAB_ROOT", str(REPO))
    relative = compose([*TINY, "trainer.checkpoint_dir=ckpt"])
    assert checkpoint_path(relative, "r1") == REPO / "ckpt" / "r1" / "last.pt"
    assert config_hash(shared) == config_hash(default)  # where checkpoints go is not what trains


def test_ui_with_a_tracking_server_says_where_its_ui_is(monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert cli.main(["ui"]) == 0  # used to exec `mlflow ui` on the server URL and crash
    assert "http://127.0.0.1:5999" in capsys.readouterr().out


def test_storage_comes_from_the_environment_for_every_command(monkeypatch) -> None:
    monkeypatch.setenv("ADRLAB_STORAGE", "postgresql://u@db/optuna")
    for argv in (["adr", "run", "0002"], ["sweep", "lambda_schedule"], ["report", "--sweep", "x"]):
        assert cli.default_storage(cli.build_parser().parse_args(argv)) == "postgresql://u@db/optuna"
    args = cli.build_parser().parse_args(["adr", "run", "0002", "--storage", "journal.log"])
    assert cli.default_storage(args) == "journal.log"


def test_sweep_summary_exit_codes(capsys) -> None:
    from types import SimpleNamespace

    spec = SimpleNamespace(name="s", n_trials=6)
    base = dict(spec=spec, counted=5, parent_run_id="p", report_command="adrlab report --sweep s")
    elsewhere = SimpleNamespace(**base, exit_codes=[0], complete=False, running_elsewhere=1)
    assert cli.sweep_summary(elsewhere, "pg", False) == 0  # used to exit 1 ("5/6 trials counted")
    assert "done here; 1 trial(s) still running on other workers" in capsys.readouterr().out
    stalled = SimpleNamespace(**base, exit_codes=[0], complete=False, running_elsewhere=0)
    assert cli.sweep_summary(stalled, "pg", False) == 1
    crashed = SimpleNamespace(**{**base, "counted": 6}, exit_codes=[1], complete=True, running_elsewhere=0)
    assert cli.sweep_summary(crashed, "pg", False) == 1


def readme_commands(*starts: str) -> list[list[str]]:
    """The README's command lines that begin with these words, as argv after `adrlab`."""
    found = []
    for line in (REPO / "README.md").read_text().splitlines():
        if not line.lstrip().startswith((".venv/bin/adrlab ", "adrlab ")):
            continue
        words = shlex.split(line.split("#", 1)[0])
        if words and words[0].endswith("adrlab") and any(" ".join(words[1:]).startswith(s) for s in starts):
            found.append(words[1:])
    return found


def test_readme_sweep_then_report_works_as_written(tmp_path, runs_dir, monkeypatch, capsys) -> None:
    """The README's pair: a sweep with overrides and --n-trials, then `report --sweep NAME`
    (which used to fail: the overrides hash the study's name). A tiny lambda_schedule stands in."""
    sweep, report = readme_commands("sweep lambda_schedule", "report --sweep lambda_schedule")
    assert "--n-trials" in sweep and any("=" in w for w in sweep) and report[-1] == "lambda_schedule"
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "sweeps").mkdir()
    write_spec(tmp_path / "sweeps", "lambda_schedule", n_trials=30)
    monkeypatch.setenv("ADRLAB_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert cli.main([*sweep, "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    exact = next(line for line in printed.splitlines() if line.startswith("report: "))
    n_trials = sweep[sweep.index("--n-trials") + 1]
    assert cli.main(report) == 0
    text = (tmp_path / "reports" / "sweeps").glob("lambda_schedule-*/README.md")
    readme = next(text).read_text()
    assert f"n_trials: {n_trials}" in readme  # the budget it ran with, not the spec's 30
    assert cli.main(shlex.split(exact.removeprefix("report: "))[1:]) == 0  # the command it printed
    study = next(p.stem for p in (runs_dir / "optuna").glob("lambda_schedule-*.journal"))
    assert cli.main(["report", "--study", study]) == 0
    stored = optuna.load_study(
        study_name=study, storage=open_storage(str(runs_dir / "optuna" / f"{study}.journal"))
    )
    assert stored.user_attrs[STUDY_N_TRIALS] == int(n_trials)
    runs = tracking.search_runs(
        tracking.tracking_uri(compose([])), None, f"tags.`{TAG_SWEEP_PARENT}` = '{study}'"
    )
    artifacts = tracking.client(tracking.tracking_uri(compose([]))).list_artifacts(
        runs.iloc[0]["run_id"], "report"
    )
    assert "report/README.md" in [a.path for a in artifacts]  # the report is on the parent run too
    assert yaml.safe_load((tmp_path / "sweeps" / "lambda_schedule.yaml").read_text())["n_trials"] == 30
