"""data.fresh_each_epoch: a new train sample from the same Markov source every epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from adrlab.config import compose, config_hash
from adrlab.data import build_synthetic, entropy_rate, source_from_config
from adrlab.train import train
from tests.conftest import TINY


def data_cfg(**extra):
    base = {"name": "synthetic", "vocab_size": 64, "order": 1, "branching": 4, "zipf_exponent": 1.1}
    base |= {"train_tokens": 20_000, "val_tokens": 2048, "source_seed": 7, "seq_len": 32}
    return OmegaConf.create({**base, **extra})


def test_fixed_sample_is_reused_and_fresh_samples_are_new_but_deterministic() -> None:
    fixed = build_synthetic(data_cfg())
    assert fixed.epoch_train(3) is fixed.train and fixed.info["train_sample"] == "fixed"
    fresh = build_synthetic(data_cfg(fresh_each_epoch=True))
    assert fresh.info["train_sample"] == "fresh each epoch"
    assert torch.equal(fresh.epoch_train(1), fixed.train)  # epoch 1 is the fixed sample
    assert torch.equal(fresh.val, fixed.val)  # the val split never changes
    epochs = [fresh.epoch_train(e) for e in (1, 2, 3)]
    assert all(e.shape == fixed.train.shape for e in epochs)
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    # A pure function of (data config, epoch): a rebuilt source redraws the very same epoch.
    again = build_synthetic(data_cfg(fresh_each_epoch=True))
    assert torch.equal(again.epoch_train(3), epochs[2])
    assert torch.equal(fresh.epoch_train(2), epochs[1])


def test_fresh_samples_come_from_the_same_source() -> None:
    cfg = data_cfg(fresh_each_epoch=True)
    source = source_from_config(cfg)
    h = entropy_rate(source)
    data = build_synthetic(cfg)
    for epoch in (2, 5):
        tokens = data.epoch_train(epoch).numpy().ravel()  # blocks are consecutive stretches
        nll = -float(np.mean(source.log_prob(tokens)))
        assert nll == pytest.approx(h, rel=0.03)  # 20k tokens: the empirical rate is the exact one


def test_fresh_run_trains_on_new_tokens_and_resumes_to_the_same_result(runs_dir) -> None:
    overrides = [*TINY, "trainer.epochs=3", "optimizer=adamw"]
    fixed = train(compose(overrides))
    fresh_overrides = [*overrides, "data.fresh_each_epoch=true"]
    straight = train(compose(fresh_overrides))
    assert straight.epochs[0]["train_loss_epoch"] == fixed.epochs[0]["train_loss_epoch"]
    assert straight.epochs[1]["train_loss_epoch"] != fixed.epochs[1]["train_loss_epoch"]

    def stop_after_two(epoch: int, _metrics: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt  # killed between epochs, after the checkpoint was written

    with pytest.raises(KeyboardInterrupt):
        train(compose([*fresh_overrides, "tracking.experiment=interrupted"]), epoch_callback=stop_after_two)
    resumed = train(compose([*fresh_overrides, "tracking.experiment=interrupted", "resume=true"]))
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
    for a, b in zip(straight.epochs, resumed.epochs):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
        assert a["train_loss_epoch"] == pytest.approx(b["train_loss_epoch"], rel=1e-6)


def test_fresh_each_epoch_off_keeps_the_config_hash() -> None:
    base = compose(TINY)
    before = OmegaConf.to_container(base)
    del before["data"]["fresh_each_epoch"]
    assert config_hash(OmegaConf.create(before)) == config_hash(base)
    assert config_hash(compose([*TINY, "data.fresh_each_epoch=true"])) != config_hash(base)
