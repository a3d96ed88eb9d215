"""`adrlab run -m`: Hydra's multirun syntax becomes a grid study on the sweep workers, with the
storage, MLflow parent/child runs and report of `adrlab sweep`."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from adrlab import tracking
from adrlab.cli import main
from adrlab.sweep.runner import TAG_SWEEP, TAG_SWEEP_PARENT
from adrlab.sweep.spec import SpecError, load_spec, multirun_spec, write_multirun_spec
from tests.conftest import TINY


def test_sweep_syntax_becomes_a_grid_with_the_fixed_overrides_as_base() -> None:
    doc = multirun_spec(
        [
            "optimizer=adamw,rmsuon",
            "regularizer.weight_decay=choice(0.1,0.5)",
            "seed=range(1,4)",
            "+experiment=rmsuon_wd0",  # not swept: base, normalised like everywhere else
            "lr_schedule=glob(ema_*)",
            "trainer.epochs=2",
        ]
    )
    space = {k: v["choices"] for k, v in doc["space"].items()}
    assert space == {
        "optimizer": ["adamw", "rmsuon"],
        "regularizer.weight_decay": [0.1, 0.5],
        "seed": [1, 2, 3],
        "lr_schedule": ["ema_inv_sqrt", "ema_inverse"],
    }
    assert doc["base"]["overrides"] == ["experiment=rmsuon_wd0", "trainer.epochs=2"]
    assert doc["sampler"]["name"] == "grid" and doc["pruner"]["name"] == "none"
    # Named after the swept keys (cut to 48 characters) and a hash of all the overrides.
    assert doc["name"].startswith("multirun-optimizer-regularizer.weight_decay-seed-lr_sched-")
    # The same command names the same study (it resumes); other overrides another one.
    name = multirun_spec(["optimizer=adamw,rmsuon"])["name"]
    assert name == multirun_spec(["optimizer=adamw,rmsuon"])["name"]
    assert name != multirun_spec(["optimizer=adamw,muon"])["name"]


def test_each_grid_point_is_one_trial_with_its_own_seed(tmp_path: Path, runs_dir: Path) -> None:
    path = write_multirun_spec(["optimizer=adamw,rmsuon", "seed=7,8", "trainer.epochs=1"], tmp_path)
    spec = load_spec(str(path))
    assert spec.n_trials == len(spec.enqueue) == 4
    assert spec.seeds == [None]  # no seed loop: the point's (or the default) seed is the run's
    assert spec.overrides_for(spec.enqueue[0]) == ["trainer.epochs=1", "optimizer=adamw", "seed=7"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["trainer.epochs=1"], "-m needs at least one swept override"),
        (["optimizer.lr=interval(0.1,1)"], "interval() needs a sampler"),
        (["+trainer.foo=1,2"], "sweep a key as key=a,b"),
        (["optimizer.lr=0.1,-1"], "-m point optimizer.lr=-1: optimizer.lr=-1.0 must be > 0"),
        (["optimizer=adamw,muon", "regularizer=sqrt_v"], "-m point optimizer=muon: regularizer=sqrt_v"),
        (["trainer.epochz=1,2"], "trainer.epochz is not a setting"),
    ],
)
def test_bad_multiruns_stop_before_any_worker(tmp_path: Path, overrides: list[str], fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        write_multirun_spec(overrides, tmp_path)
    assert fragment in str(err.value)
    assert not list(tmp_path.glob("*.yaml"))


@pytest.mark.slow
def test_run_m_trains_the_grid_on_the_sweep_workers(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [*TINY, "trainer.epochs=1", "optimizer=adamw,rmsuon"]
    assert main(["run", "-m", *overrides, "--workers", "1"]) == 0
    err = capsys.readouterr().err
    name = multirun_spec(overrides)["name"]
    assert f"multirun study spec {runs_dir / 'multirun' / name}.yaml" in err
    assert "adrlab: project root" in err
    study = optuna.load_study(
        study_name=name,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(runs_dir / "optuna" / f"{name}.journal"))
        ),
    )
    assert sorted(t.params["optimizer"] for t in study.trials if t.state == TrialState.COMPLETE) == [
        "adamw",
        "rmsuon",
    ]
    uri = tracking.tracking_uri(None)
    runs = tracking.search_runs(uri, [f"sweep-{name}"], f"tags.`{TAG_SWEEP}` = '{name}'")
    parent = runs[runs[f"tags.{TAG_SWEEP_PARENT}"] == name]
    children = runs[runs[f"tags.{TAG_SWEEP_PARENT}"].isna()]
    assert len(parent) == 1 and len(children) == 2
    assert (children["tags.mlflow.parentRunId"] == parent.iloc[0]["run_id"]).all()
    assert sorted(children["params.optimizer.name"]) == ["adamw", "rmsuon"]
    assert (runs_dir.parent / "reports" / "sweeps" / name / "README.md").is_file()
    # The same command again resumes the finished study: nothing trains twice.
    assert main(["run", *overrides, "--multirun", "--workers", "1"]) == 0
    assert len(study.trials) == 2
