"""The one training code path: `adrlab run`, sweeps and ADR experiments all call `train()`."""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from adrlab import tracking
from adrlab.config import config_hash, flatten, project_root
from adrlab.data import TokenData, build_data
from adrlab.model import Transformer
from adrlab.optim import (
    build_optimizer,
    derived_params,
    group_hyperparams,
    resolve_decay,
    set_step_hyperparams,
)
from adrlab.schedules import build_schedule

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


# --------------------------------------------------------------------------- helpers


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


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int | None) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over non-pad targets, and how many targets counted."""
    ignore = -100 if pad_id is None else pad_id
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=ignore,
        reduction="sum",
    )
    count = targets.numel() if pad_id is None else int((targets != pad_id).sum())
    return total, count


@torch.no_grad()
def evaluate(
    model: Transformer, blocks: torch.Tensor, cfg: DictConfig, pad_id: int | None, device: torch.device
) -> float:
    """Mean val loss per non-pad token (val PPL = exp of it)."""
    model.eval()
    total, count = 0.0, 0
    batch = int(cfg.trainer.eval_batch_size)
    for i, start in enumerate(range(0, blocks.shape[0], batch)):
        if cfg.trainer.max_eval_batches is not None and i >= cfg.trainer.max_eval_batches:
            break
        chunk = blocks[start : start + batch].to(device)
        with autocast(cfg, device):
            logits = model(chunk[:, :-1])
        loss, n = lm_loss(logits, chunk[:, 1:], pad_id)
        total += float(loss)
        count += n
    model.train()
    return total / max(count, 1)


def autocast(cfg: DictConfig, device: torch.device):
    enabled = device.type == "cuda" and cfg.trainer.dtype == "bfloat16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of an epoch depends only on (seed, epoch): resume replays it exactly."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n_blocks, generator=generator)


def matrix_rms(model: Transformer) -> float:
    """Weight RMS of the hidden matrices (the tensors √(η/2λ) is a prediction for)."""
    roles = model.param_roles()
    sq, n = 0.0, 0
    for name, p in model.named_parameters():
        if roles[name] == "matrix":
            sq += float(p.detach().float().pow(2).sum())
            n += p.numel()
    return math.sqrt(sq / max(n, 1))


def grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def applied_decay(mode: str, hyper: dict[str, float]) -> float:
    """The multiplicative shrink θ ← (1 − d)θ the main group received this step (0 if none)."""
    if mode == "per_step":
        return hyper["wd"]
    if mode == "decoupled":
        return hyper["lr"] * hyper["wd"]
    return 0.0


def divergence_bound(cfg: DictConfig, vocab_size: int) -> float:
    if cfg.trainer.divergence_loss is not None:
        return float(cfg.trainer.divergence_loss)
    return 3.0 * math.log(vocab_size)


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


# --------------------------------------------------------------------------- checkpoints


def checkpoint_path(cfg: DictConfig, run_id: str) -> Path:
    """`trainer.checkpoint_dir` (relative to the project root; on a filesystem every node shares,
    a trial retried on another node resumes from it), else <runs_dir>/checkpoints."""
    root = cfg.trainer.get("checkpoint_dir")
    if not root:
        return tracking.runs_dir(cfg) / "checkpoints" / run_id / "last.pt"
    path = Path(str(root)).expanduser()
    return (path if path.is_absolute() else project_root() / path) / run_id / "last.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-save never leaves a torn checkpoint


def find_resumable(uri: str, experiment: str, chash: str, cfg: DictConfig) -> str | None:
    runs = tracking.search_runs(uri, [experiment], f"tags.`{tracking.TAG_CONFIG_HASH}` = '{chash}'")
    if runs.empty:
        return None
    runs = runs[runs["status"] != "FINISHED"].sort_values("start_time", ascending=False)
    for run_id in runs["run_id"]:
        if checkpoint_path(cfg, run_id).is_file():
            return str(run_id)
    return None


def find_reusable(uri: str, chash: str) -> str | None:
    """A FINISHED, complete run with this config hash in any experiment of the store."""
    runs = tracking.search_runs(
        uri,
        None,
        f"tags.`{tracking.TAG_CONFIG_HASH}` = '{chash}' and tags.`{tracking.TAG_STATE}` = 'COMPLETE'",
        statuses=["FINISHED"],
    )
    if runs.empty:
        return None
    # Never reuse a run that was itself a cache hit: point at the run that trained.
    if f"tags.{tracking.TAG_REUSED_FROM}" in runs:
        runs = runs[runs[f"tags.{tracking.TAG_REUSED_FROM}"].isna()]
    return None if runs.empty else str(runs.sort_values("start_time").iloc[0]["run_id"])


def epochs_of(uri: str, run_id: str) -> list[dict[str, float]]:
    keys = ["val_loss", "val_ppl", "train_loss_epoch", "epoch_time", "weight_rms_epoch"]
    history = tracking.metric_history(uri, run_id, keys)
    if history.empty:
        return []
    table = history.pivot_table(index="step", columns="metric", values="value", aggfunc="last")
    return [{"epoch": int(step), **row.dropna().to_dict()} for step, row in table.iterrows()]


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
    threads = set_threads(cfg)
    seed = int(cfg.seed)
    chash = config_hash(cfg)
    uri = tracking.tracking_uri(cfg)
    experiment_id = tracking.ensure_experiment(uri, cfg.tracking.experiment, cfg)
    tags = {
        tracking.TAG_CONFIG_HASH: chash,
        tracking.TAG_GIT_SHA: tracking.git_sha(),
        tracking.TAG_SEED: seed,
        tracking.TAG_SCALE: cfg.scale,
        tracking.TAG_ARM: cfg.arm,
        **{str(k): str(v) for k, v in (cfg.tags or {}).items()},
        **(extra_tags or {}),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id

    resume_flag = str(cfg.resume).strip().lower()
    if run_id is None and resume_flag not in ("false", "none", "", "0", "no"):
        if resume_flag == "true":
            run_id = find_resumable(uri, cfg.tracking.experiment, chash, cfg)
            if run_id is None:
                print(f"adrlab: nothing to resume for config {chash}; starting a new run", file=sys.stderr)
        else:
            run_id = str(cfg.resume)
    if run_id is None and cfg.tracking.reuse:
        cached = find_reusable(uri, chash)
        if cached is not None:
            return _record_reuse(uri, experiment_id, cfg, cached, tags)

    torch.manual_seed(seed)
    device = pick_device(cfg)
    data = build_data(cfg.data, cache_dir=tracking.runs_dir(cfg) / "cache")
    n_blocks = data.train.shape[0]
    batch_size = int(cfg.trainer.batch_size)
    full_epoch_steps = math.ceil(n_blocks / batch_size)  # S = ceil(N/B) of the real train split
    steps_per_epoch = full_epoch_steps
    if cfg.trainer.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, int(cfg.trainer.max_steps_per_epoch))
    total_steps = steps_per_epoch * int(cfg.trainer.epochs)

    model = Transformer(cfg.model, vocab_size=data.vocab_size).to(device)
    decay = resolve_decay(cfg, full_epoch_steps)
    optimizer = build_optimizer(model, cfg, decay)
    schedule = build_schedule(cfg, total_steps=total_steps, base_lr=float(cfg.optimizer.lr), decay=decay)
    derived = derived_params(cfg, decay, steps_per_epoch)
    derived["entropy_floor_ppl"] = data.entropy_floor_ppl if data.entropy_floor_ppl is not None else "n/a"
    derived["n_params"] = sum(p.numel() for p in model.parameters())
    derived["n_train_tokens"] = data.info.get("n_train_tokens", 0)
    derived["threads"] = threads

    c = tracking.client(uri)
    start_epoch, global_step, history = 1, 0, []
    if run_id is not None:
        ckpt_file = checkpoint_path(cfg, run_id)
        if not ckpt_file.is_file():
            raise RuntimeError(f"cannot resume run {run_id}: no checkpoint at {ckpt_file}")
        state = torch.load(ckpt_file, map_location=device, weights_only=False)
        if state["config_hash"] != chash:
            raise RuntimeError(
                f"cannot resume run {run_id}: its config hash {state['config_hash']} differs from {chash}; "
                "pass the same overrides as the original run"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, global_step, history = state["epoch"] + 1, state["global_step"], state["history"]
        tracking.with_retry(lambda: c.update_run(run_id, status="RUNNING"))
        if on_run is not None:
            on_run(run_id)
        logger = tracking.RunLogger(uri, run_id)
    else:
        run = tracking.with_retry(
            lambda: c.create_run(
                experiment_id,
                tags={k: str(v) for k, v in tags.items() if v is not None},
                run_name=cfg.tracking.run_name or cfg.arm,
            )
        )
        run_id = run.info.run_id
        if on_run is not None:
            on_run(run_id)
        logger = tracking.RunLogger(uri, run_id)
        logger.params({**flatten(cfg), **{f"derived.{k}": v for k, v in derived.items()}})
        _log_config_artifact(logger, cfg)

    progress = Progress(cfg)
    bound = divergence_bound(cfg, data.vocab_size)
    log_every = int(cfg.trainer.log_every)
    clip = float(cfg.trainer.grad_clip)
    tokens_per_step = batch_size * int(cfg.data.seq_len)
    result = RunResult(run_id=run_id, state="COMPLETE", epochs=list(history))
    model.train()
    loop_start = time.perf_counter()
    try:
        for epoch in range(start_epoch, int(cfg.trainer.epochs) + 1):
            epoch_start = time.perf_counter()
            order = epoch_order(n_blocks, seed, epoch)
            loss_sum, loss_steps = 0.0, 0
            interval_start, interval_tokens = time.perf_counter(), 0
            bar = progress.bar(steps_per_epoch, f"epoch {epoch}/{cfg.trainer.epochs}")
            for step_in_epoch in range(steps_per_epoch):
                idx = order[step_in_epoch * batch_size : (step_in_epoch + 1) * batch_size]
                batch = data.train[idx].to(device, non_blocking=True)
                set_step_hyperparams(
                    optimizer, schedule.lr_multiplier(global_step), schedule.wd_multiplier(global_step)
                )
                global_step += 1
                log_now = global_step % log_every == 0 or global_step == 1
                with autocast(cfg, device):
                    logits = model(batch[:, :-1])
                loss_total, count = lm_loss(logits, batch[:, 1:], data.pad_id)
                loss = loss_total / max(count, 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Read before the step: Muon-style optimizers may overwrite .grad in place.
                if clip > 0:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
                else:
                    gnorm = grad_norm(model) if log_now else math.nan
                optimizer.collect_stats = log_now
                optimizer.step()
                loss_value = float(loss.detach())
                interval_tokens += tokens_per_step
                if not math.isfinite(loss_value) or loss_value > bound:
                    result.state = "DIVERGED"
                    result.failure_reason = (
                        "nan_loss" if not math.isfinite(loss_value) else "loss_above_bound"
                    )
                    logger.metrics(
                        {"train_loss": loss_value if math.isfinite(loss_value) else 1e30}, global_step
                    )
                    break
                loss_sum += loss_value
                loss_steps += 1
                if log_now and cfg.tracking.log_steps:
                    elapsed = time.perf_counter() - interval_start
                    hyper = group_hyperparams(optimizer)
                    point = {
                        "train_loss": loss_value,
                        "grad_norm": gnorm,
                        "weight_rms": matrix_rms(model),
                        "tokens_per_s": interval_tokens / max(elapsed, 1e-9),
                        "decay": applied_decay(decay.mode, hyper),
                        **hyper,
                        **getattr(optimizer, "last_stats", {}),
                    }
                    logger.metrics(point, global_step)
                    interval_start, interval_tokens = time.perf_counter(), 0
                bar.update(1)
                if log_now:
                    bar.set_postfix(loss=f"{loss_value:.3f}")
            bar.close()
            if result.state == "DIVERGED":
                break
            val_loss = evaluate(model, data.val, cfg, data.pad_id, device)
            metrics = {
                "val_loss": val_loss,
                "val_ppl": math.exp(min(val_loss, 700.0)),
                "train_loss_epoch": loss_sum / max(loss_steps, 1),
                "epoch_time": time.perf_counter() - epoch_start,
                "weight_rms_epoch": matrix_rms(model),
            }
            logger.metrics(metrics, epoch)
            logger.flush()
            result.epochs.append({"epoch": epoch, **metrics})
            progress.write(
                f"epoch {epoch:>3}  train {metrics['train_loss_epoch']:.4f}  val {val_loss:.4f}  "
                f"ppl {metrics['val_ppl']:.2f}  ({metrics['epoch_time']:.1f}s)"
            )
            if not math.isfinite(val_loss) or val_loss > bound:
                result.state, result.failure_reason = "DIVERGED", "val_loss_above_bound"
                break
            if cfg.trainer.checkpoint:
                save_checkpoint(
                    checkpoint_path(cfg, run_id),
                    {
                        "config_hash": chash,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "epoch": epoch,
                        "global_step": global_step,
                        "history": result.epochs,
                    },
                )
            if epoch_callback is not None:
                epoch_callback(epoch, metrics)
    except Pruned as exc:
        result.state, result.failure_reason = "PRUNED", str(exc) or "pruned"
    except KeyboardInterrupt:
        logger.tags({tracking.TAG_STATE: "KILLED", tracking.TAG_FAILURE: "interrupted"})
        logger.finish("KILLED")
        raise
    except BaseException as exc:
        logger.tags({tracking.TAG_STATE: "FAILED", tracking.TAG_FAILURE: f"error: {type(exc).__name__}"})
        logger.finish("FAILED")
        raise

    result.train_seconds = time.perf_counter() - loop_start
    logger.tags({tracking.TAG_STATE: result.state, tracking.TAG_FAILURE: result.failure_reason})
    _log_summary(logger, cfg, result, derived)
    status = {"COMPLETE": "FINISHED", "DIVERGED": "FAILED", "PRUNED": "KILLED"}[result.state]
    logger.finish(status)
    if result.state == "COMPLETE":
        shutil.rmtree(checkpoint_path(cfg, run_id).parent, ignore_errors=True)
    return result


def _record_reuse(
    uri: str, experiment_id: str, cfg: DictConfig, source: str, tags: dict[str, Any]
) -> RunResult:
    """A cache hit: a new, visibly tagged run holding a copy of the finished run's params and
    full metric history (per step and per epoch), so reports read it like any other run."""
    c = tracking.client(uri)
    original = tracking.with_retry(lambda: c.get_run(source))
    tags = {**tags, tracking.TAG_REUSED_FROM: source, tracking.TAG_STATE: "COMPLETE"}
    run = tracking.with_retry(
        lambda: c.create_run(
            experiment_id,
            tags={k: str(v) for k, v in tags.items() if v is not None},
            run_name=cfg.tracking.run_name or cfg.arm,
        )
    )
    logger = tracking.RunLogger(uri, run.info.run_id)
    logger.params({**original.data.params, **flatten(cfg)})
    history = tracking.metric_history(uri, source, sorted(original.data.metrics))
    for metric, step, value in history.itertuples(index=False):
        logger.metric(metric, value, step)
    logger.finish("FINISHED")
    return RunResult(
        run_id=run.info.run_id, state="COMPLETE", epochs=epochs_of(uri, source), reused_from=source
    )


def _log_config_artifact(logger: tracking.RunLogger, cfg: DictConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        logger.artifact(path)


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


def _log_summary(
    logger: tracking.RunLogger, cfg: DictConfig, result: RunResult, derived: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "summary.md"
        path.write_text(summary_markdown(cfg, result, derived))
        logger.artifact(path)


__all__ = ["EpochCallback", "Pruned", "RunResult", "TokenData", "evaluate", "lm_loss", "train"]
