"""Every config option composes; bad overrides fail before anything runs, with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adrlab.cli import main
from adrlab.config import ConfigError, compose, conf_dir, config_hash


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group",
    [
        "optimizer",
        "regularizer",
        "lr_schedule",
        "wd_schedule",
        "model",
        "data",
        "trainer",
        "tracking",
        "scale",
    ],
)
def test_every_option_composes(group: str) -> None:
    for option in options(group):
        overrides = [f"{group}={option}"]
        if group == "wd_schedule":
            overrides.append("regularizer=decoupled")
        cfg = compose(overrides)
        if group in ("optimizer", "regularizer", "lr_schedule", "wd_schedule", "data"):
            assert cfg[group].name == option


def test_experiment_presets_compose() -> None:
    for option in options("experiment"):
        compose([f"experiment={option}"])
        compose([f"+experiment={option}"])  # accepted as a synonym


def test_paper_scale_is_the_seed_setup() -> None:
    cfg = compose(["data=wikitext2", "scale=paper"])
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads, cfg.model.head_dim) == (512, 4, 6, 128)
    assert cfg.model.d_ff == 2048 and cfg.model.tie_embeddings
    assert cfg.data.seq_len == 255 and cfg.data.vocab_size == 40479 and cfg.data.tokenizer == "bpe"
    assert cfg.trainer.batch_size == 8 and cfg.optimizer.lr == 1e-4 and cfg.trainer.epochs == 10
    assert cfg.seed == 42


def test_command_line_beats_scale() -> None:
    cfg = compose(["scale=paper", "model=tiny", "optimizer.lr=0.01"])
    assert cfg.model.name == "tiny" and cfg.optimizer.lr == 0.01


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["optimizer=nope"], "choose one of: ada_rmsuon, adamw, muon, rmsuon"),
        (["optimizer.lr=-1"], "optimizer.lr=-1.0 must be > 0"),
        (["optimizer.lr=abc"], "could not be converted to Float"),
        (["optimizer.momentum=0.9"], "optimizer.momentum is not a setting"),
        (["regularizer=sqrt_v", "optimizer=muon"], "keeps no second moment"),
        (["regularizer=none", "wd_schedule=follow_lr"], "regularizer=none has no λ"),
        (["regularizer.scope=some"], "choose one of: all, no_1d, matrices"),
        (["trainer.epochs=0"], "trainer.epochs=0 must be > 0"),
    ],
)
def test_bad_overrides_exit_2_with_a_helpful_message(overrides, fragment, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", *overrides])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


def test_bad_override_from_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adrlab.cli", "run", "optimizer=nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "optimizer=nope is not a known optimizer" in proc.stderr


def test_config_errors_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        compose(["model.head_dim=15"])


def test_config_hash_tracks_training_settings_only() -> None:
    base = compose([])
    assert config_hash(base) == config_hash(compose(["trainer.progress=off", "tracking.experiment=x"]))
    assert config_hash(base) != config_hash(compose(["seed=1"]))
    assert config_hash(base) != config_hash(compose(["regularizer.weight_decay=0.2"]))


def test_help_lists_subcommands(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("run", "sweep", "adr", "report", "bench", "ui"):
        assert name in out


def test_a_repeated_composition_is_a_copy_and_follows_edited_config_files(tmp_path) -> None:
    """compose() reuses an earlier result for the same overrides: the caller gets its own copy,
    and an edited file in a config folder (here to a value of the same length, in the same
    clock tick) is composed anew."""
    extra = tmp_path / "mine" / "optimizer"
    extra.mkdir(parents=True)
    option = extra / "mine.yaml"
    option.write_text("defaults:\n  - adamw\n  - _self_\nlr: 0.001\n")
    dirs = [str(tmp_path / "mine")]
    first = compose(["optimizer=mine"], config_dirs=dirs)
    assert first.optimizer.lr == 0.001
    first.optimizer.lr = 5.0  # the caller's copy: a later compose must not see this
    assert compose(["optimizer=mine"], config_dirs=dirs).optimizer.lr == 0.001
    option.write_text("defaults:\n  - adamw\n  - _self_\nlr: 0.002\n")
    assert compose(["optimizer=mine"], config_dirs=dirs).optimizer.lr == 0.002
