"""The command line as a Hydra user types it: options and overrides in any order, --cfg,
python -m adrlab, config groups in --help, a config group given twice refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adrlab.cli import build_parser, main, parse_args
from adrlab.config import ConfigError, check_groups_given_once, config_groups

SRC = Path(__file__).resolve().parents[1] / "src"


def parse(argv: list[str]):
    return parse_args(build_parser(), argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "lambda_schedule", "--n-trials", "10", "trainer.epochs=5"],  # the README's own example
        ["sweep", "lambda_schedule", "trainer.epochs=5", "--n-trials", "10"],
        ["sweep", "--n-trials", "10", "lambda_schedule", "trainer.epochs=5"],
    ],
)
def test_sweep_options_and_overrides_in_any_order(argv: list[str]) -> None:
    args = parse(argv)
    assert (args.spec, args.overrides, args.n_trials) == ("lambda_schedule", ["trainer.epochs=5"], 10)


def test_run_overrides_keep_their_order_around_options() -> None:
    args = parse(["run", "a=1", "--cfg", "job", "b=2", "-m", "c=3,4", "--workers", "2", "d=5"])
    assert args.overrides == ["a=1", "b=2", "c=3,4", "d=5"]
    assert (args.cfg, args.multirun, args.workers) == ("job", True, 2)
    adr_run = parse(["adr", "run", "--scale", "paper", "0002", "--workers", "1"])
    assert (adr_run.id, adr_run.scale, adr_run.workers) == ("0002", "paper", 1)


def test_unknown_options_and_stray_words_are_still_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["run", "--bogus"], ["report", "--check", "stray"], ["sweep", "x", "--n-trails", "3"]):
        with pytest.raises(SystemExit) as exit_:
            parse(argv)
        assert exit_.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_cfg_job_all_and_print_config_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "optimizer=adamw", "--cfg", "job"]) == 0
    job = capsys.readouterr().out
    assert yaml.safe_load(job)["optimizer"]["name"] == "adamw"
    assert "${oc.env:ADRLAB_RUNS_DIR,runs}" in job  # unresolved, as Hydra prints it
    assert main(["run", "--cfg", "job", "--resolve", "optimizer=adamw"]) == 0
    assert "${" not in capsys.readouterr().out
    assert main(["run", "--print-config", "optimizer=adamw"]) == 0
    alias = capsys.readouterr().out
    assert yaml.safe_load(alias)["optimizer"]["name"] == "adamw" and "${" not in alias
    assert main(["run", "experiment=v_rmsuon", "--cfg", "all"]) == 0
    choices = yaml.safe_load(capsys.readouterr().out)["hydra"]["runtime"]["choices"]
    assert choices["experiment"] == "v_rmsuon" and choices["regularizer"] == "sqrt_v"


def test_a_group_given_twice_is_refused_naming_both(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "experiment=rmsuon_wd0", "experiment=v_rmsuon", "--cfg", "job"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "experiment given twice" in err and "experiment=rmsuon_wd0" in err and "experiment=v_rmsuon" in err
    assert main(["sweep", "lambda_schedule", "optimizer=adamw", "+optimizer=muon"]) == 2
    assert "optimizer given twice" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="experiment given twice"):
        check_groups_given_once(["+experiment=a", "experiment=b"])  # + is the same group
    check_groups_given_once(["optimizer=adamw", "optimizer.lr=0.1", "optimizer.lr=0.2"])  # keys may repeat


def test_help_lists_config_groups_and_their_options(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        for group, options in config_groups().items():
            assert f"  {group} " in out
            for option in options:
                assert option in out
    assert {"optimizer", "regularizer", "lr_schedule", "wd_schedule", "experiment"} <= set(config_groups())


def test_python_dash_m_adrlab() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    ok = subprocess.run(
        [sys.executable, "-m", "adrlab", "run", "--cfg", "job", "optimizer=muon"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["optimizer"]["name"] == "muon"
    bad = subprocess.run(
        [sys.executable, "-m", "adrlab", "run", "optimizer=nope"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "choose one of" in bad.stderr


def test_a_sweep_value_without_m_points_to_multirun(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "optimizer=adamw,muon", "--cfg", "job"])
    assert exit_.value.code == 2
    assert "add -m (--multirun)" in capsys.readouterr().err
    assert main(["run", "-m", "optimizer=adamw,muon", "--cfg", "job"]) == 2
