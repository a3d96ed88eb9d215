"""The one training code path: `adrlab run`, sweeps and ADR experiments all call `train()`.

`train()` is a short sequence of stages, each a function a test can call on its own:

    plan = prepare(cfg)            which run: new, resumed from its checkpoint, or a cache hit
    setup = build(plan)            data, model, optimizer, schedules, derived params
    state = start(setup, plan)     open the MLflow run (or reopen it and load the checkpoint)
    fit(setup, state, callback)    the epochs: train_epoch (train_step per batch), end_epoch
    result = finish(setup, state)  state tag, summary, MLflow status, checkpoint cleanup

Everything a run writes to MLflow goes through `tracking.RunLogger`, called from the stages
at named points: open_tracked_run, log_step, end_epoch, abort_tracked_run, finish.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer

from adrlab import run_names, signals, tracking
from adrlab.config import config_hash, flatten
from adrlab.cost import CostMeter, cost_params
from adrlab.data import TokenData, build_data
from adrlab.lm import (
    applied_decay,
    autocast,
    divergence_bound,
    epoch_order,
    evaluate,
    grad_norm,
    lm_loss,
    matrix_rms,
)
from adrlab.loop_metrics import UpdateMeter, loop_metrics, needs_snapshot
from adrlab.model import Transformer
from adrlab.optim import (
    DecaySpec,
    derived_params,
    resolve_decay,
    set_step_hyperparams,
)
from adrlab.optim.external import WrappedOptimizer, build_run_optimizer
from adrlab.provenance import TAG_CODE_HASH, training_code_hash
from adrlab.runstore import (
    checkpoint_path,
    epochs_of,
    find_resumable,
    find_reusable,
    load_checkpoint,
    save_checkpoint,
)
from adrlab.schedules import Schedule, build_schedule

# Called after each epoch with (epoch, epoch metrics); may raise Pruned to stop the run early.
EpochCallback = Callable[[int, dict[str, float]], None]


class Pruned(Exception):
    """Raised by an epoch callback (a sweep's pruner) to end a run early on purpose."""


@dataclass
class RunResult:
    run_id: str
    state: str  # COMPLETE | DIVERGED | PRUNED | KILLED
    epochs: list[dict[str, float]] = field(default_factory=list)
    failure_reason: str | None = None
    reused_from: str | None = None
    train_seconds: float = 0.0  # the epochs loop: steps, logging, eval, checkpoints (not setup)

    @property
    def best_val_ppl(self) -> float:
        values = [e["val_ppl"] for e in self.epochs if math.isfinite(e.get("val_ppl", math.inf))]
        return min(values) if values else math.inf

    @property
    def final_val_ppl(self) -> float:
        return self.epochs[-1]["val_ppl"] if self.epochs else math.inf


@dataclass
class RunPlan:
    """What `prepare` decided: where the run is tracked, and whether it is new, resumed or reused."""

    cfg: DictConfig
    threads: int
    config_hash: str
    uri: str
    experiment_id: str
    tags: dict[str, Any]
    resume_run_id: str | None = None  # continue this run from its checkpoint
    reuse_source: str | None = None  # a finished run with the same config: copy it, don't train


@dataclass
class TrainingSetup:
    """What `build` makes from the config; the loop reads it and never rebinds it."""

    cfg: DictConfig
    config_hash: str
    device: torch.device
    data: TokenData
    model: Transformer
    optimizer: Optimizer | WrappedOptimizer
    update_meter: UpdateMeter
    schedule: Schedule
    decay: DecaySpec
    derived: dict[str, Any]  # logged once as derived.* params and shown in the summary
    steps_per_epoch: int
    divergence_bound: float
    progress: Progress
    cost: CostMeter  # optimizer-step share, step time and peak memory per epoch (adrlab.cost)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.trainer.batch_size)

    @property
    def epochs(self) -> int:
        return int(self.cfg.trainer.epochs)


@dataclass
class RunState:
    """What changes while a run trains; a checkpoint holds enough of it to resume."""

    logger: tracking.RunLogger
    result: RunResult
    start_epoch: int = 1
    global_step: int = 0  # optimizer steps taken so far

    @property
    def run_id(self) -> str:
        return self.result.run_id


class Progress:
    """tqdm bars on a terminal, silence elsewhere (CI logs stay short)."""

    def __init__(self, cfg: DictConfig) -> None:
        mode = cfg.trainer.progress
        self.enabled = mode == "on" or (mode == "auto" and sys.stderr.isatty())

    def bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=not self.enabled, dynamic_ncols=True)

    def write(self, text: str) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(text)


def set_threads(cfg: DictConfig) -> int:
    """Intra-op threads: explicit, or all cores split between the sweep's workers."""
    threads = int(cfg.trainer.threads)
    if threads <= 0:
        workers = max(1, int(os.environ.get("ADRLAB_WORKERS", "1")))
        threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return threads


def pick_device(cfg: DictConfig) -> torch.device:
    wanted = cfg.trainer.device
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto"
        )
    return torch.device(wanted)


# --------------------------------------------------------------------------- train


def train(
    cfg: DictConfig,
    *,
    epoch_callback: EpochCallback | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
    run_id: str | None = None,
    on_run: Callable[[str], None] | None = None,
) -> RunResult:
    """Train one run described by a composed config and log it to MLflow.

    on_run: called with the MLflow run id as soon as the run exists (a sweep records it in
    its trial, so a trial killed mid-run still points to its run).

    run_id: continue this MLflow run from its checkpoint (resume); `cfg.resume` does the same
    from the command line (true = the newest unfinished run with this config hash).
    """
    plan = prepare(cfg, run_id=run_id, parent_run_id=parent_run_id, extra_tags=extra_tags)
    if plan.reuse_source is not None:
        return reuse(plan)
    setup = build(plan)
    state = start(setup, plan, on_run)
    fit(setup, state, epoch_callback)
    return finish(setup, state)


# --------------------------------------------------------------------------- prepare


def prepare(
    cfg: DictConfig,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> RunPlan:
    """Set threads, make sure the experiment exists, and decide: resume, reuse or a new run."""
    threads = set_threads(cfg)
    chash = config_hash(cfg)
    uri = tracking.tracking_uri(cfg)
    experiment_id = tracking.ensure_experiment(uri, cfg.tracking.experiment, cfg)
    tags = run_tags(cfg, chash, parent_run_id, extra_tags)
    plan = RunPlan(cfg, threads, chash, uri, experiment_id, tags, resume_run_id=run_id)
    if plan.resume_run_id is None:
        plan.resume_run_id = resume_target(cfg, uri, chash)
    if plan.resume_run_id is None and cfg.tracking.reuse:
        plan.reuse_source = find_reusable(uri, chash, training_code_hash())
    return plan


def run_tags(
    cfg: DictConfig, chash: str, parent_run_id: str | None, extra_tags: dict[str, str] | None
) -> dict[str, Any]:
    tags = {
        tracking.TAG_CONFIG_HASH: chash,
        tracking.TAG_GIT_SHA: tracking.git_sha(),
        TAG_CODE_HASH: training_code_hash(),
        tracking.TAG_SEED: int(cfg.seed),
        tracking.TAG_SCALE: cfg.scale,
        tracking.TAG_ARM: cfg.arm,
        **{str(k): str(v) for k, v in (cfg.tags or {}).items()},
        **(extra_tags or {}),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tags.update(run_names.labels(cfg, tags))  # name (and an ADR run's description) in mlflow ui
    return tags


def resume_target(cfg: DictConfig, uri: str, chash: str) -> str | None:
    """The run `cfg.resume` asks to continue: none, the newest resumable one (true), or an id."""
    flag = str(cfg.resume).strip().lower()
    if flag in ("false", "none", "", "0", "no"):
        return None
    if flag != "true":
        return str(cfg.resume)
    found = find_resumable(uri, cfg.tracking.experiment, chash, cfg)
    if found is None:
        print(f"adrlab: nothing to resume for config {chash}; starting a new run", file=sys.stderr)
    return found


def reuse(plan: RunPlan) -> RunResult:
    """A cache hit: a new, visibly tagged run holding a copy of the finished run's params and
    full metric history (per step and per epoch), so reports read it like any other run."""
    source = plan.reuse_source
    assert source is not None
    original = tracking.with_retry(lambda: tracking.client(plan.uri).get_run(source))
    tags = {**plan.tags, tracking.TAG_REUSED_FROM: source, tracking.TAG_STATE: "COMPLETE"}
    logger = create_tracked_run(plan, tags)
    logger.params({**original.data.params, **flatten(plan.cfg)})
    logger.copy_inputs(source)
    history = tracking.metric_history(plan.uri, source, sorted(original.data.metrics))
    for metric, step, value in history.itertuples(index=False):
        logger.metric(metric, value, step)
    logger.finish("FINISHED")
    return RunResult(
        run_id=logger.run_id, state="COMPLETE", epochs=epochs_of(plan.uri, source), reused_from=source
    )


# --------------------------------------------------------------------------- build


def build(plan: RunPlan) -> TrainingSetup:
    """Seed, then data, model, optimizer and schedules, in the order that fixes the RNG stream."""
    cfg = plan.cfg
    torch.manual_seed(int(cfg.seed))
    device = pick_device(cfg)
    data = build_data(cfg.data, cache_dir=tracking.runs_dir(cfg) / "cache")
    full_epoch_steps = math.ceil(data.train.shape[0] / int(cfg.trainer.batch_size))  # S = ceil(N/B)
    steps_per_epoch = full_epoch_steps
    if cfg.trainer.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, int(cfg.trainer.max_steps_per_epoch))
    total_steps = steps_per_epoch * int(cfg.trainer.epochs)

    model = Transformer(cfg.model, vocab_size=data.vocab_size).to(device)
    decay = resolve_decay(cfg, full_epoch_steps)  # timescale λ uses the real split, not the cap
    optimizer = build_run_optimizer(model, cfg, decay)  # built-in, or a `_target_` wrapped
    schedule = build_schedule(cfg, total_steps=total_steps, base_lr=float(cfg.optimizer.lr), decay=decay)
    derived = derived_params(cfg, decay, steps_per_epoch)
    derived["entropy_floor_ppl"] = data.entropy_floor_ppl if data.entropy_floor_ppl is not None else "n/a"
    derived["n_params"] = sum(p.numel() for p in model.parameters())
    derived["n_train_tokens"] = data.info.get("n_train_tokens", 0)
    derived["threads"] = plan.threads
    derived.update(cost_params(model, cfg))
    return TrainingSetup(
        cfg=cfg,
        config_hash=plan.config_hash,
        device=device,
        data=data,
        model=model,
        optimizer=optimizer,
        update_meter=UpdateMeter(model),
        schedule=schedule,
        decay=decay,
        derived=derived,
        steps_per_epoch=steps_per_epoch,
        divergence_bound=divergence_bound(cfg, data.vocab_size),
        progress=Progress(cfg),
        cost=CostMeter(device),
    )


# --------------------------------------------------------------------------- start


def start(setup: TrainingSetup, plan: RunPlan, on_run: Callable[[str], None] | None = None) -> RunState:
    """Open a new MLflow run, or reopen the one being resumed and restore its checkpoint
    (weights, optimizer state, RNG, epoch, step and the epochs logged so far). `on_run` hears
    the run id as soon as the run exists, before anything is logged to it."""
    if plan.resume_run_id is None:
        logger = open_tracked_run(setup, plan, on_run)
        if setup.cfg.tracking.system_metrics:
            try:
                logger.start_system_metrics()
            except RuntimeError:
                abort_tracked_run(logger, "FAILED", "error: system metrics unavailable")
                raise
        return RunState(logger, RunResult(run_id=logger.run_id, state="COMPLETE"))
    run_id = plan.resume_run_id
    ckpt = load_checkpoint(setup.cfg, run_id, setup.config_hash, setup.device)
    setup.model.load_state_dict(ckpt["model"])
    setup.optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    logger = tracking.RunLogger(plan.uri, run_id)
    tracking.with_retry(lambda: logger.client.update_run(run_id, status="RUNNING"))
    if on_run is not None:
        on_run(run_id)
    result = RunResult(run_id=run_id, state="COMPLETE", epochs=list(ckpt["history"]))
    return RunState(logger, result, start_epoch=ckpt["epoch"] + 1, global_step=ckpt["global_step"])


def create_tracked_run(plan: RunPlan, tags: dict[str, Any]) -> tracking.RunLogger:
    c = tracking.client(plan.uri)
    run = tracking.with_retry(
        lambda: c.create_run(
            plan.experiment_id,
            tags={k: str(v) for k, v in tags.items() if v is not None},
            run_name=tags[tracking.TAG_RUN_NAME],
        )
    )
    return tracking.RunLogger(plan.uri, run.info.run_id)


def open_tracked_run(
    setup: TrainingSetup, plan: RunPlan, on_run: Callable[[str], None] | None = None
) -> tracking.RunLogger:
    """A new run with its tags, the flattened config and derived.* params, and config.yaml."""
    logger = create_tracked_run(plan, plan.tags)
    if on_run is not None:
        on_run(logger.run_id)  # a kill while params are logged still leaves the trial its run
    logger.params({**flatten(setup.cfg), **{f"derived.{k}": v for k, v in setup.derived.items()}})
    logger.text_artifact("config.yaml", OmegaConf.to_yaml(setup.cfg, resolve=True))
    logger.dataset(tracking.training_dataset(setup.cfg.data, setup.data))
    return logger


# --------------------------------------------------------------------------- fit


def fit(setup: TrainingSetup, state: RunState, epoch_callback: EpochCallback | None = None) -> None:
    """Train from `state.start_epoch` to the last epoch, or until the run diverges or is pruned.
    Anything else that escapes marks the MLflow run KILLED (Ctrl-C) or FAILED, then propagates."""
    setup.model.train()
    loop_start = time.perf_counter()
    try:
        for epoch in range(state.start_epoch, setup.epochs + 1):
            epoch_start = time.perf_counter()
            train_loss = train_epoch(setup, state, epoch)
            if train_loss is None:
                break  # diverged inside the epoch
            metrics = end_epoch(setup, state, epoch, train_loss, epoch_start)
            if metrics is None:
                break  # diverged on the validation set
            if epoch_callback is not None:
                epoch_callback(epoch, metrics)
    except Pruned as exc:
        state.result.state, state.result.failure_reason = "PRUNED", str(exc) or "pruned"
    except KeyboardInterrupt:
        abort_tracked_run(state.logger, "KILLED", "interrupted")
        raise
    except BaseException as exc:
        abort_tracked_run(state.logger, "FAILED", f"error: {type(exc).__name__}")
        raise
    state.result.train_seconds = time.perf_counter() - loop_start


def train_epoch(setup: TrainingSetup, state: RunState, epoch: int) -> float | None:
    """One pass over the epoch's batches: the mean train loss, or None if the run diverged.

    Losses stay on the device and are read back once every log_every steps (and at the end of
    the epoch), not once a step: a host sync per step stalls a GPU. Divergence is therefore
    found at the next read, up to log_every − 1 steps late, and reported at the step it happened.
    Statistics for logging are computed only on logging steps, and not at all with
    tracking.log_steps=false."""
    cfg, batch_size = setup.cfg, setup.batch_size
    log_every = int(cfg.trainer.log_every)
    tokens_per_step = batch_size * int(cfg.data.seq_len)
    train_blocks = setup.data.epoch_train(epoch)  # a new sample per epoch when the source streams
    order = epoch_order(train_blocks.shape[0], int(cfg.seed), epoch)
    losses: list[float] = []
    pending: list[tuple[int, torch.Tensor]] = []  # (global step, loss on the device)
    interval_start = time.perf_counter()
    bar = setup.progress.bar(setup.steps_per_epoch, f"epoch {epoch}/{cfg.trainer.epochs}")
    for i in range(setup.steps_per_epoch):
        signals.raise_if_pending()  # a sweep worker's deferred Ctrl-C/SIGTERM stops here, between steps
        batch = train_blocks[order[i * batch_size : (i + 1) * batch_size]].to(setup.device, non_blocking=True)
        state.global_step += 1
        log_now = state.global_step % log_every == 0 or state.global_step == 1
        measure = log_now and bool(cfg.tracking.log_steps)
        loss, gnorm = train_step(setup, batch, state.global_step - 1, measure)
        pending.append((state.global_step, loss))
        evaluate_every_steps(setup, state)
        bar.update(1)
        if not (log_now or i == setup.steps_per_epoch - 1):
            continue
        read = settle_losses(setup, state, pending)
        pending = []
        if read is None:
            break
        losses += read
        if measure:
            elapsed = max(time.perf_counter() - interval_start, 1e-9)
            log_step(setup, state, read[-1], float(gnorm), len(read) * tokens_per_step / elapsed)
        interval_start = time.perf_counter()
        bar.set_postfix(loss=f"{read[-1]:.3f}")
    bar.close()
    return None if state.result.state == "DIVERGED" else sum(losses) / max(len(losses), 1)


def evaluate_every_steps(setup: TrainingSetup, state: RunState) -> None:
    """`trainer.eval_every_steps`: validation inside the epoch, logged at the global step as
    val_loss_step / val_ppl_step. Evaluation draws no random numbers and leaves the model in
    train mode, so the training trajectory is the same with or without it."""
    every = int(setup.cfg.trainer.eval_every_steps)
    if every <= 0 or state.global_step % every != 0:
        return
    val_loss = evaluate(setup.model, setup.data.val, setup.cfg, setup.data.pad_id, setup.device)
    point = {"val_loss_step": val_loss, "val_ppl_step": math.exp(min(val_loss, 700.0))}
    state.logger.metrics(point, state.global_step)


def settle_losses(
    setup: TrainingSetup, state: RunState, pending: list[tuple[int, torch.Tensor]]
) -> list[float] | None:
    """Read the pending losses in one transfer; on the first non-finite or too-large one, mark
    the run DIVERGED, log train_loss at that step and return None."""
    values = torch.stack([loss for _, loss in pending]).tolist()
    for (step, _), value in zip(pending, values, strict=True):
        if not math.isfinite(value) or value > setup.divergence_bound:
            state.result.state = "DIVERGED"
            state.result.failure_reason = "nan_loss" if not math.isfinite(value) else "loss_above_bound"
            state.logger.metrics({"train_loss": value if math.isfinite(value) else 1e30}, step)
            return None
    return values


def train_step(
    setup: TrainingSetup, batch: torch.Tensor, step: int, measure: bool
) -> tuple[torch.Tensor, torch.Tensor | float]:
    """One optimizer step at 0-based global `step`: the batch loss (a detached tensor, not
    read back here) and the grad norm before the step (a tensor when clipping or `measure`
    asked for it, else NaN). `measure` also asks the optimizer for its statistics and times
    the step for the cost metrics."""
    optimizer, model = setup.optimizer, setup.model
    setup.cost.begin_step(measure)
    set_step_hyperparams(optimizer, setup.schedule.lr_multiplier(step), setup.schedule.wd_multiplier(step))
    with autocast(setup.cfg, setup.device):
        logits = model(batch[:, :-1])
    loss_total, count = lm_loss(logits, batch[:, 1:], setup.data.pad_id)
    loss = loss_total / max(count, 1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # Read before the step: Muon-style optimizers may overwrite .grad in place.
    clip = float(setup.cfg.trainer.grad_clip)
    if clip > 0:
        gnorm: torch.Tensor | float = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    else:
        gnorm = grad_norm(model) if measure else math.nan
    optimizer.collect_stats = measure
    if measure and needs_snapshot(optimizer):
        setup.update_meter.snapshot()  # update RMS of any optimizer, measured from the parameters
    with setup.cost.optimizer_step():
        optimizer.step()
    return loss.detach(), gnorm


def log_step(setup: TrainingSetup, state: RunState, loss: float, gnorm: float, tokens_per_s: float) -> None:
    """The per-step metrics at `state.global_step` (see docs/INTERFACES.md)."""
    measured = loop_metrics(setup.optimizer, setup.update_meter)  # lr, wd, stats, update RMS
    point = {
        "train_loss": loss,
        "grad_norm": gnorm,
        "weight_rms": matrix_rms(setup.model),
        "tokens_per_s": tokens_per_s,
        "decay": applied_decay(setup.decay.mode, measured),
        **measured,
    }
    state.logger.metrics(point, state.global_step)


def end_epoch(
    setup: TrainingSetup, state: RunState, epoch: int, train_loss: float, epoch_start: float
) -> dict[str, float] | None:
    """Evaluate, log the epoch's metrics, checkpoint. The metrics, or None if val diverged."""
    val_loss = evaluate(setup.model, setup.data.val, setup.cfg, setup.data.pad_id, setup.device)
    metrics = {
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 700.0)),
        "train_loss_epoch": train_loss,
        "epoch_time": time.perf_counter() - epoch_start,
        "weight_rms_epoch": matrix_rms(setup.model),
        **setup.cost.epoch_metrics(),
    }
    state.logger.metrics(metrics, epoch)
    state.logger.flush()
    state.result.epochs.append({"epoch": epoch, **metrics})
    setup.progress.write(
        f"epoch {epoch:>3}  train {train_loss:.4f}  val {val_loss:.4f}  "
        f"ppl {metrics['val_ppl']:.2f}  ({metrics['epoch_time']:.1f}s)"
    )
    if not math.isfinite(val_loss) or val_loss > setup.divergence_bound:
        state.result.state, state.result.failure_reason = "DIVERGED", "val_loss_above_bound"
        return None
    if setup.cfg.trainer.checkpoint:
        save_checkpoint(checkpoint_path(setup.cfg, state.run_id), checkpoint_state(setup, state, epoch))
    return metrics


def checkpoint_state(setup: TrainingSetup, state: RunState, epoch: int) -> dict[str, Any]:
    """What `start` needs to resume after `epoch` and reach the same result."""
    return {
        "config_hash": setup.config_hash,
        "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
        "global_step": state.global_step,
        "history": state.result.epochs,
    }


def abort_tracked_run(logger: tracking.RunLogger, state: str, reason: str) -> None:
    logger.tags({tracking.TAG_STATE: state, tracking.TAG_FAILURE: reason})
    logger.finish(state)


# --------------------------------------------------------------------------- finish


def finish(setup: TrainingSetup, state: RunState) -> RunResult:
    """Tag the outcome, write summary.md, end the MLflow run; a complete run needs no checkpoint."""
    result = state.result
    state.logger.tags({tracking.TAG_STATE: result.state, tracking.TAG_FAILURE: result.failure_reason})
    state.logger.text_artifact("summary.md", summary_markdown(setup.cfg, result, setup.derived))
    status = {"COMPLETE": "FINISHED", "DIVERGED": "FAILED", "PRUNED": "KILLED"}[result.state]
    state.logger.finish(status)
    if result.state == "COMPLETE":
        shutil.rmtree(checkpoint_path(setup.cfg, state.run_id).parent, ignore_errors=True)
    return result


def summary_markdown(cfg: DictConfig, result: RunResult, derived: dict[str, Any]) -> str:
    lines = [
        f"# Run {result.run_id}",
        "",
        f"- state: **{result.state}**" + (f" ({result.failure_reason})" if result.failure_reason else ""),
        f"- optimizer: {cfg.optimizer.name}, regularizer: {cfg.regularizer.name}, "
        f"lr_schedule: {cfg.lr_schedule.name}, wd_schedule: {cfg.wd_schedule.name}",
        f"- model: {cfg.model.name}, data: {cfg.data.name}, scale: {cfg.scale}, seed: {cfg.seed}",
        "",
        "## Derived",
        "",
        *[f"- {k}: {v}" for k, v in derived.items()],
        "",
        "## Epochs",
        "",
        "| epoch | train loss | val loss | val ppl | time (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    best_epoch = None
    if result.epochs:
        best_epoch = min(result.epochs, key=lambda e: e["val_ppl"])["epoch"]  # PPL: lower is better
    for e in result.epochs:
        mark = " **best**" if e["epoch"] == best_epoch else ""
        lines.append(
            f"| {e['epoch']} | {e['train_loss_epoch']:.4f} | {e['val_loss']:.4f} | "
            f"{e['val_ppl']:.2f}{mark} | {e['epoch_time']:.1f} |"
        )
    lines += ["", "## Config", "", "```yaml", OmegaConf.to_yaml(cfg, resolve=True).rstrip(), "```", ""]
    return "\n".join(lines)


__all__ = [
    "EpochCallback",
    "Pruned",
    "RunPlan",
    "RunResult",
    "RunState",
    "TokenData",
    "TrainingSetup",
    "build",
    "end_epoch",
    "epoch_order",
    "epochs_of",
    "evaluate",
    "finish",
    "fit",
    "lm_loss",
    "prepare",
    "reuse",
    "start",
    "train",
    "train_epoch",
    "train_step",
]
