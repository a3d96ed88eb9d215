"""trainer.eval_every_steps: a validation curve inside the epochs that leaves training unchanged."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from adrlab import tracking
from adrlab.adr.metrics import LOGGED_METRICS
from adrlab.config import ConfigError, compose, config_hash
from adrlab.train import train
from tests.conftest import TINY

# TINY: 4096 train tokens in blocks of 33 → 124 blocks, batch 8 → 16 steps per epoch, 2 epochs.
STEPS_PER_EPOCH = 16


def step_curve(cfg, run_id: str) -> dict[int, tuple[float, float]]:
    history = tracking.metric_history(tracking.tracking_uri(cfg), run_id, ["val_loss_step", "val_ppl_step"])
    curve: dict[int, dict[str, float]] = {}
    for metric, step, value in history.itertuples(index=False):
        curve.setdefault(int(step), {})[metric] = float(value)
    return {s: (v["val_loss_step"], v["val_ppl_step"]) for s, v in curve.items()}


def test_eval_every_steps_logs_a_curve_and_leaves_training_unchanged(runs_dir) -> None:
    plain_cfg = compose([*TINY, "optimizer=adamw"])
    plain = train(plain_cfg)
    assert step_curve(plain_cfg, plain.run_id) == {}  # off by default

    cfg = compose([*TINY, "optimizer=adamw", "trainer.eval_every_steps=4"])
    evaluated = train(cfg)
    curve = step_curve(cfg, evaluated.run_id)
    assert sorted(curve) == list(range(4, 2 * STEPS_PER_EPOCH + 1, 4))
    for loss, ppl in curve.values():
        assert math.isclose(ppl, math.exp(loss), rel_tol=1e-9)
    # Evaluating in between draws no random numbers and changes no weight: the epochs match exactly.
    assert [e["val_loss"] for e in evaluated.epochs] == [e["val_loss"] for e in plain.epochs]
    assert [e["train_loss_epoch"] for e in evaluated.epochs] == [e["train_loss_epoch"] for e in plain.epochs]
    # ADR criteria may name the new metrics: adrlab.adr.metrics lists everything the run logged.
    logged = tracking.client(tracking.tracking_uri(cfg)).get_run(evaluated.run_id).data.metrics
    assert {"val_loss_step", "val_ppl_step"} <= set(logged) <= set(LOGGED_METRICS)
    # At an epoch's last step the model is the one the epoch's validation sees.
    assert curve[STEPS_PER_EPOCH][0] == evaluated.epochs[0]["val_loss"]
    assert curve[2 * STEPS_PER_EPOCH][0] == evaluated.epochs[1]["val_loss"]
    # The early points show the curve the per-epoch metric cannot: loss falls within epoch 1.
    assert curve[4][0] > curve[STEPS_PER_EPOCH][0]


def test_eval_every_steps_off_keeps_the_config_hash_and_rejects_negatives() -> None:
    base = compose(TINY)
    before = OmegaConf.to_container(base)
    del before["trainer"]["eval_every_steps"]  # the config as it was before the option existed
    assert config_hash(OmegaConf.create(before)) == config_hash(base)
    assert config_hash(compose([*TINY, "trainer.eval_every_steps=5"])) != config_hash(base)
    with pytest.raises(ConfigError, match=r"trainer\.eval_every_steps=-1 must be >= 0"):
        compose([*TINY, "trainer.eval_every_steps=-1"])
