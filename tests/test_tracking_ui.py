"""What `mlflow ui` shows of adrlab runs: names, descriptions, dataset inputs and the links
adrlab prints and writes."""

from __future__ import annotations

import json
import re

import optuna
import pandas as pd
import pytest
import yaml

from adrlab import tracking
from adrlab.adr.report import mlflow_section
from adrlab.config import compose
from adrlab.data import build_synthetic
from adrlab.run_names import description, run_name
from adrlab.sweep.report import experiment_link, run_links
from adrlab.sweep.runner import TrialContext, run_trial
from adrlab.sweep.spec import load_spec
from adrlab.train import train
from tests.conftest import TINY

ADR_TAGS = {
    tracking.TAG_ADR: "0002",
    tracking.TAG_ADR_SCALE: "smoke",
    tracking.TAG_ADR_TITLE: "ADR-0002: V-RMSuon direct penalty",
}


# --------------------------------------------------------------------------- names (no training)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "rmsuon s42"),  # nothing differs: the optimizer and the seed
        (["regularizer.weight_decay=0.5", "seed=7"], "rmsuon wd=0.5 s7"),
        (
            ["optimizer=adamw", "lr_schedule=cosine", "optimizer.lr=1e-3", "seed=1"],
            "adamw cosine lr=0.001 s1",
        ),
        (["optimizer=rmsuon", "regularizer.weight_decay=0.1"], "rmsuon s42"),  # equal to the defaults
        (["wd_schedule=follow_lr", "trainer.epochs=3"], "rmsuon wd:follow_lr ep=3 s42"),
        (["experiment=v_rmsuon", "seed=3"], "v_rmsuon s3"),  # a preset names itself
        (["experiment=v_rmsuon", "regularizer.weight_decay=1e-4"], "v_rmsuon wd=0.0001 s42"),
        (["arm=mine", "optimizer=muon"], "mine muon s42"),  # an arm that is no preset leads
        (["tracking.run_name=my own name"], "my own name"),  # explicit wins
    ],
)
def test_plain_run_names_show_what_differs_from_the_defaults(overrides, expected) -> None:
    assert run_name(compose(overrides)) == expected


def test_long_names_are_cut_but_keep_the_seed() -> None:
    name = run_name(compose([*TINY, "regularizer.weight_decay=0.5", "seed=9"]))
    assert name.startswith("rmsuon wd=0.5 ep=2 bs=8") and name.endswith("… s9") and len(name) <= 120


def test_trial_and_adr_names() -> None:
    cfg = compose(["experiment=v_rmsuon", "seed=3"])
    sampled = {"regularizer.weight_decay": 0.03123, "lr_schedule": "cosine", "wd_schedule": "constant"}
    assert run_name(cfg, {tracking.TAG_TRIAL: "7"}, sampled) == "t07 λ=0.0312 cosine wd:constant"
    assert run_name(cfg, {tracking.TAG_TRIAL: "12"}, {"optimizer.lr": 0.001, "seed": 2}) == "t12 lr=0.001 s2"
    # An ADR job is a trial of a job study too: the ADR, the arm and the seed name it.
    assert run_name(cfg, {**ADR_TAGS, tracking.TAG_TRIAL: "1"}, {"job": "v_rmsuon-s3"}) == "0002 v_rmsuon s3"
    note = description(cfg, ADR_TAGS)
    assert note is not None and "ADR-0002: V-RMSuon direct penalty" in note
    assert "arm `v_rmsuon`" in note and "seed 3" in note and "scale smoke" in note
    assert description(cfg, {tracking.TAG_TRIAL: "1"}) is None


# --------------------------------------------------------------------------- links


def test_links_open_the_training_runs_view(monkeypatch) -> None:
    monkeypatch.delenv("ADRLAB_UI_URL", raising=False)
    local = "sqlite:////tmp/x/mlflow.db"
    assert (
        tracking.ui_url(local, "3") == "http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning"
    )
    assert tracking.ui_url(local, "3", "abc") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    assert tracking.ui_url(local) == "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
    # Without the experiment: MLflow's own /runs/<id> route finds it (reports committed to git).
    assert (
        tracking.ui_url(local, run_id="abc")
        == "http://127.0.0.1:5000/#/runs/abc?workflowType=machine_learning"
    )
    assert tracking.ui_url("http://mlflow.lab:8080/", "4").startswith(
        "http://mlflow.lab:8080/#/experiments/4?"
    )
    assert tracking.ui_url(local, "3", base="http://127.0.0.1:5123").startswith("http://127.0.0.1:5123/#/")
    monkeypatch.setenv("ADRLAB_UI_URL", "http://ui.local:9000")
    assert tracking.ui_url(local, "5") == "http://ui.local:9000/#/experiments/5?workflowType=machine_learning"


# --------------------------------------------------------------------------- real runs


def dataset_of(uri: str, run_id: str):
    inputs = tracking.client(uri).get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "train"}
    return inputs[0].dataset


def test_a_real_run_is_named_and_logs_its_training_data(runs_dir, monkeypatch) -> None:
    monkeypatch.delenv("ADRLAB_UI_URL", raising=False)
    cfg = compose([*TINY, "trainer.epochs=1", "optimizer=adamw", "seed=5"])
    result = train(cfg)
    uri = tracking.tracking_uri(cfg)
    c = tracking.client(uri)
    run = c.get_run(result.run_id)
    assert run.info.run_name == run_name(cfg) and run.info.run_name.startswith("adamw ")
    assert run.info.run_name.endswith(" s5") and tracking.TAG_NOTE not in run.data.tags
    dataset = dataset_of(uri, result.run_id)
    assert dataset.name == "synthetic-markov(seed=1234, V=64)" and re.fullmatch(
        r"[0-9a-f]{12}", dataset.digest
    )
    assert (
        dataset.source_type == "code"
        and "markov(order=1, vocab=64" in json.loads(dataset.source)["generator"]
    )
    assert json.loads(dataset.profile)["n_train_tokens"] == 3968
    experiment = c.get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking.TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert tracking.run_urls(uri, [result.run_id]) == {
        result.run_id: tracking.ui_url(uri, experiment.experiment_id, result.run_id)
    }
    assert tracking.experiment_urls(uri) == {"adrlab": tracking.ui_url(uri, experiment.experiment_id)}

    # The same config for an ADR arm, from the run cache: named and described as the ADR's run,
    # and it shows the data the original run trained on.
    again = compose(
        [*TINY, "trainer.epochs=1", "optimizer=adamw", "seed=5", "arm=adamw_arm", "tracking.reuse=true"]
    )
    reused = train(again, extra_tags=ADR_TAGS)
    assert reused.reused_from == result.run_id
    copy = c.get_run(reused.run_id)
    assert copy.info.run_name == "0002 adamw_arm s5"
    assert copy.data.tags[tracking.TAG_NOTE].startswith("ADR-0002: V-RMSuon direct penalty")
    assert "arm `adamw_arm` · seed 5" in copy.data.tags[tracking.TAG_NOTE]
    assert dataset_of(uri, reused.run_id).digest == dataset.digest

    # The ADR report links each arm's runs by seed to their pages in mlflow ui's training view;
    # a run this store does not hold (a committed snapshot's) by MLflow's /runs/<id> route.
    gone = "f" * 32
    evidence = pd.DataFrame({"arm": ["a", "b"], "seed": [5, 5], "run_id": [result.run_id, gone]})
    section = "\n".join(mlflow_section(evidence))
    assert section.startswith("### Runs in MLflow")
    assert f"| a | 1 | [s5]({tracking.ui_url(uri, experiment.experiment_id, result.run_id)}) |" in section
    assert f"| b | 1 | [s5](http://127.0.0.1:5000/#/runs/{gone}?workflowType=machine_learning) |" in section


def test_dataset_digest_follows_the_data() -> None:
    base = compose(TINY).data
    other = compose([*TINY, "data.source_seed=99"]).data
    first, second = build_synthetic(base), build_synthetic(base)
    same = tracking.training_dataset(base, first).digest == tracking.training_dataset(base, second).digest
    changed = tracking.training_dataset(other, build_synthetic(other))
    assert same and changed.digest != tracking.training_dataset(base, first).digest
    assert changed.name == "synthetic-markov(seed=99, V=64)"


def test_a_sweep_trial_is_named_by_number_and_sampled_values(tmp_path, runs_dir) -> None:
    spec_path = tmp_path / "names.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "names",
                "base": {"overrides": ["optimizer=adamw", *TINY, "trainer.epochs=1"]},
                "space": {
                    "regularizer.weight_decay": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
                    "lr_schedule": {"type": "categorical", "choices": ["constant", "cosine"]},
                },
                "n_trials": 1,
                "objective": {"metric": "val_ppl", "statistic": "best", "direction": "minimize"},
                "tracking": {"experiment": "sweep-names"},
            }
        )
    )
    spec = load_spec(str(spec_path))
    study = optuna.create_study()
    study.enqueue_trial({"regularizer.weight_decay": 0.0312, "lr_schedule": "cosine"})
    trial = study.ask()
    run_trial(trial, TrialContext(spec, str(tmp_path / "names.journal"), None, False))
    uri = tracking.tracking_uri(compose(spec.overrides))
    run = tracking.client(uri).get_run(trial.user_attrs["run_id_seed0"])
    assert run.info.run_name == "t00 λ=0.0312 cosine"
    assert run.data.tags[tracking.TAG_TRIAL] == "0"  # tags stay as they are
    # The sweep report links the experiment's runs table and each trial's run page.
    url = tracking.ui_url(uri, run.info.experiment_id)
    assert experiment_link(spec) == f"[`sweep-names`]({url})"
    page = tracking.ui_url(uri, run.info.experiment_id, run.info.run_id)
    assert run_links(spec, pd.Series([run.info.run_id, ""])) == [f"[{run.info.run_id[:8]}]({page})", ""]


def test_adrlab_ui_prints_a_training_view_link_per_experiment(runs_dir, monkeypatch, capsys) -> None:
    import argparse
    import os

    from adrlab.cli import cmd_ui

    monkeypatch.delenv("ADRLAB_UI_URL", raising=False)
    uri = tracking.tracking_uri(None)
    c = tracking.client(uri)
    old = c.create_experiment("made-before-kinds")  # no kind tag, as in stores from older adrlab
    launched: list[list[str]] = []

    def fake_execv(_path: str, argv: list[str]) -> None:
        launched.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    with pytest.raises(SystemExit):
        cmd_ui(argparse.Namespace(port=5123))
    out = capsys.readouterr().out
    assert "mlflow ui on http://127.0.0.1:5123/#/experiments?workflowType=machine_learning" in out
    assert (
        f"made-before-kinds: http://127.0.0.1:5123/#/experiments/{old}?workflowType=machine_learning" in out
    )
    assert "Default" not in out  # MLflow's own empty experiment is left out
    assert c.get_experiment(old).tags[tracking.TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert launched and launched[0][launched[0].index("--port") + 1] == "5123"


def test_run_urls_from_the_database_match_the_api_search(runs_dir) -> None:
    """The SQL path of run_urls gives what the MLflow search gives: active runs of active
    experiments only, unknown ids left out."""
    uri = tracking.tracking_uri(None)
    c = tracking.client(uri)
    kept, gone = tracking.ensure_experiment(uri, "kept"), tracking.ensure_experiment(uri, "gone")
    live = [c.create_run(kept).info.run_id for _ in range(3)]
    deleted = c.create_run(kept).info.run_id
    c.delete_run(deleted)
    in_deleted_experiment = c.create_run(gone).info.run_id
    c.delete_experiment(gone)
    asked = [*live, deleted, in_deleted_experiment, "0" * 32]
    expected = {r: tracking.ui_url(uri, kept, r) for r in live}
    assert tracking.run_urls(uri, asked) == expected
    wanted = sorted(asked)
    assert sorted(tracking._run_experiments_api(uri, wanted)) == sorted(
        tracking._run_experiments_sql(uri, wanted)
    )
