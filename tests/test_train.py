"""The training code path end to end against a real MLflow SQLite store."""

from __future__ import annotations

import math

import pytest
import torch

from adrlab import tracking
from adrlab.config import compose
from adrlab.train import (
    Pruned,
    build,
    epochs_of,
    finish,
    fit,
    lm_loss,
    prepare,
    start,
    train,
    train_epoch,
    train_step,
)
from tests.conftest import TINY


def test_smoke_run_lands_in_mlflow(runs_dir) -> None:
    cfg = compose([*TINY, "trainer.epochs=1", "optimizer=rmsuon", "arm=unit"])
    result = train(cfg)
    assert result.state == "COMPLETE" and len(result.epochs) == 1
    uri = tracking.tracking_uri(cfg)
    assert uri.startswith("sqlite:///") and str(runs_dir) in uri
    c = tracking.client(uri)
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["optimizer.name"] == "rmsuon" and params["regularizer.weight_decay"] == "0.1"
    for key in (
        "steps_per_epoch",
        "lambda",
        "per_step_decay",
        "tau_iter",
        "tau_epoch",
        "predicted_weight_rms",
        "entropy_floor_ppl",
    ):
        assert f"derived.{key}" in params, key
    assert tags[tracking.TAG_ARM] == "unit" and tags[tracking.TAG_SEED] == "42"
    assert len(tags[tracking.TAG_CONFIG_HASH]) == 16 and tags[tracking.TAG_STATE] == "COMPLETE"
    for key in (
        "val_loss",
        "val_ppl",
        "epoch_time",
        "train_loss",
        "lr",
        "wd",
        "grad_norm",
        "update_rms",
        "weight_rms",
        "tokens_per_s",
        "energy_mean",
        "energy_max",
    ):
        assert key in metrics, key
    assert math.isclose(metrics["val_ppl"], math.exp(metrics["val_loss"]), rel_tol=1e-9)
    steps = tracking.metric_history(uri, result.run_id, ["train_loss"])
    assert len(steps) >= 3  # per-step points, not just the last one
    artifacts = {a.path for a in c.list_artifacts(result.run_id)}
    assert {"config.yaml", "summary.md"} <= artifacts
    # derived params follow the formulas: decoupled λ=0.1 at lr 3e-3 decays 3e-4 per step
    assert math.isclose(float(params["derived.per_step_decay"]), 3e-3 * 0.1, rel_tol=1e-9)
    assert math.isclose(float(params["derived.predicted_weight_rms"]), math.sqrt(3e-3 / 0.2), rel_tol=1e-9)


def test_resume_reaches_the_same_result(runs_dir) -> None:
    overrides = [*TINY, "trainer.epochs=3", "optimizer=rmsuon"]
    straight = train(compose(overrides))

    def stop_after_two(epoch: int, _metrics: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt  # a kill between epochs, after the checkpoint was written

    cfg = compose([*overrides, "tracking.experiment=interrupted"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, epoch_callback=stop_after_two)
    resumed = train(compose([*overrides, "tracking.experiment=interrupted", "resume=true"]))
    assert len(resumed.epochs) == 3
    for a, b in zip(straight.epochs, resumed.epochs):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    uri = tracking.tracking_uri(cfg)
    run = tracking.client(uri).get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    assert [e["epoch"] for e in epochs_of(uri, resumed.run_id)] == [1, 2, 3]


def test_diverging_run_ends_failed_with_reason(runs_dir) -> None:
    cfg = compose([*TINY, "optimizer=adamw", "trainer.divergence_loss=1.0"])
    result = train(cfg)
    assert result.state == "DIVERGED" and result.failure_reason == "loss_above_bound"
    run = tracking.client(tracking.tracking_uri(cfg)).get_run(result.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "loss_above_bound"


def test_nan_loss_ends_failed(runs_dir) -> None:
    cfg = compose([*TINY, "optimizer=adamw", "optimizer.lr=1e12", "trainer.grad_clip=0", "model.init_std=50"])
    result = train(cfg)
    assert result.state == "DIVERGED"
    assert result.failure_reason in ("nan_loss", "loss_above_bound", "val_loss_above_bound")


def test_pruned_run_is_marked(runs_dir) -> None:
    def prune(epoch: int, _metrics: dict) -> None:
        raise Pruned("median pruner at epoch 1")

    cfg = compose([*TINY, "optimizer=adamw"])
    result = train(cfg, epoch_callback=prune)
    assert result.state == "PRUNED" and len(result.epochs) == 1
    run = tracking.client(tracking.tracking_uri(cfg)).get_run(result.run_id)
    assert run.info.status == "KILLED" and run.data.tags[tracking.TAG_STATE] == "PRUNED"


def test_reuse_of_a_finished_run_is_visible(runs_dir) -> None:
    cfg = compose([*TINY, "optimizer=adamw", "tracking.reuse=true"])
    first = train(cfg)
    second = train(cfg)
    assert first.reused_from is None and second.reused_from == first.run_id
    assert [e["val_ppl"] for e in second.epochs] == pytest.approx([e["val_ppl"] for e in first.epochs])
    tags = tracking.client(tracking.tracking_uri(cfg)).get_run(second.run_id).data.tags
    assert tags[tracking.TAG_REUSED_FROM] == first.run_id
    uri = tracking.tracking_uri(cfg)
    copied = tracking.metric_history(uri, second.run_id, ["train_loss", "grad_norm", "val_ppl"])
    original = tracking.metric_history(uri, first.run_id, ["train_loss", "grad_norm", "val_ppl"])
    assert copied.equals(original)  # per-step history included, so reports treat it as a run


def test_pad_targets_do_not_count() -> None:
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(1, 11, (2, 5))
    padded = targets.clone()
    padded[:, 3:] = 0
    full, n_full = lm_loss(logits[:, :3], targets[:, :3], pad_id=0)
    masked, n_masked = lm_loss(logits, padded, pad_id=0)
    assert n_masked == n_full == 6
    assert torch.allclose(full, masked)


def test_stages_called_one_by_one_are_the_run_train_makes(runs_dir) -> None:
    overrides = [*TINY, "optimizer=rmsuon"]
    whole = train(compose([*overrides, "tracking.experiment=whole"]))
    plan = prepare(compose([*overrides, "tracking.experiment=staged"]))
    assert plan.resume_run_id is None and plan.reuse_source is None
    setup = build(plan)
    assert setup.steps_per_epoch == math.ceil(setup.data.train.shape[0] / setup.batch_size)
    assert setup.derived["threads"] == 1 and setup.derived["n_params"] > 0
    state = start(setup, plan)
    assert state.start_epoch == 1 and state.global_step == 0
    assert tracking.client(plan.uri).get_run(state.run_id).info.status == "RUNNING"
    fit(setup, state)
    assert state.global_step == 2 * setup.steps_per_epoch
    result = finish(setup, state)
    assert result.state == "COMPLETE" and result.run_id != whole.run_id
    for key in ("val_loss", "train_loss_epoch", "weight_rms_epoch"):
        assert [e[key] for e in result.epochs] == [e[key] for e in whole.epochs], key
    assert tracking.client(plan.uri).get_run(result.run_id).info.status == "FINISHED"


def test_train_step_follows_the_schedule_and_measures_before_the_step(runs_dir) -> None:
    setup = build(prepare(compose([*TINY, "optimizer=adamw", "lr_schedule=cosine", "trainer.grad_clip=0"])))
    batch = setup.data.train[: setup.batch_size]
    before = [p.detach().clone() for p in setup.model.parameters()]
    loss, gnorm = train_step(setup, batch, step=3, measure=True)
    assert math.isfinite(loss) and gnorm > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, setup.model.parameters()))
    lr = max(g["lr"] for g in setup.optimizer.param_groups)
    assert lr == pytest.approx(setup.cfg.optimizer.lr * setup.schedule.lr_multiplier(3))
    _, unmeasured = train_step(setup, batch, step=4, measure=False)
    assert math.isnan(unmeasured)  # no clipping and not a logged step: the norm is not computed


def test_train_epoch_stops_at_the_first_step_above_the_bound(runs_dir) -> None:
    plan = prepare(compose([*TINY, "optimizer=adamw"]))
    setup = build(plan)
    setup.divergence_bound = 0.5  # every loss of an untrained model is above it
    state = start(setup, plan)
    assert train_epoch(setup, state, epoch=1) is None
    assert state.global_step == 1
    assert (state.result.state, state.result.failure_reason) == ("DIVERGED", "loss_above_bound")
    assert finish(setup, state).state == "DIVERGED"
