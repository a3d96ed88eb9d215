"""`adrlab bench`: ratios measured side by side in one process, written to reports/bench/.

Timings on a shared machine are noisy, so every comparison interleaves its variants
(A B A B ...) and reports medians; targets are checked on ratios, never on absolute times.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adrlab import tracking
from adrlab.benchreport import write_report
from adrlab.benchstats import judge, median_interval
from adrlab.config import compose, reports_root
from adrlab.data import build_data
from adrlab.model import Transformer
from adrlab.optim import build_optimizer, resolve_decay, set_step_hyperparams
from adrlab.schedules import build_schedule
from adrlab.train import epoch_order, evaluate, lm_loss, train

BENCH_OVERRIDES = ["trainer.epochs=2", "trainer.progress=off", "trainer.checkpoint=true"]


def abba(names: list[str], rep: int) -> list[str]:
    """The variants' order in repetition `rep`: forward on even reps, reversed on odd ones, so a
    variant never always runs first (warm caches) or last (a slowing machine)."""
    return names if rep % 2 == 0 else names[::-1]


def interleaved(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Each repetition runs every variant once, in A B / B A order; samples per variant."""
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(reps):
        for name in abba(list(variants), rep):
            samples[name].append(variants[name]())
    return samples


def paired_ratios(samples: dict[str, list[float]], num: str, den: str) -> list[float]:
    """num/den − 1 within each repetition (the pair ran side by side)."""
    return [a / b - 1.0 for a, b in zip(samples[num], samples[den], strict=True)]


def bare_loop(overrides: list[str]) -> float:
    """The same steps as adrlab.train (schedule, forward, loss, backward, clip, step, eval per
    epoch) with nothing else: no metrics, no logging, no checkpoints. Returns seconds."""
    cfg = compose(overrides)
    torch.manual_seed(int(cfg.seed))
    data = build_data(cfg.data, cache_dir=tracking.runs_dir(cfg) / "cache")
    batch_size = int(cfg.trainer.batch_size)
    steps = math.ceil(data.train.shape[0] / batch_size)
    model = Transformer(cfg.model, vocab_size=data.vocab_size)
    decay = resolve_decay(cfg, steps)
    optimizer = build_optimizer(model, cfg, decay)
    schedule = build_schedule(
        cfg, total_steps=steps * cfg.trainer.epochs, base_lr=float(cfg.optimizer.lr), decay=decay
    )
    device = torch.device("cpu")
    start = time.perf_counter()
    step = 0
    for epoch in range(1, int(cfg.trainer.epochs) + 1):
        train_blocks = data.epoch_train(epoch)
        order = epoch_order(train_blocks.shape[0], int(cfg.seed), epoch)
        for i in range(steps):
            batch = train_blocks[order[i * batch_size : (i + 1) * batch_size]]
            set_step_hyperparams(optimizer, schedule.lr_multiplier(step), schedule.wd_multiplier(step))
            step += 1
            logits = model(batch[:, :-1])
            total, count = lm_loss(logits, batch[:, 1:], data.pad_id)
            optimizer.zero_grad(set_to_none=True)
            (total / count).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.trainer.grad_clip))
            optimizer.step()
        evaluate(model, data.val, cfg, data.pad_id, device)
    return time.perf_counter() - start


def adrlab_loop(overrides: list[str]) -> float:
    result = train(compose(overrides))
    return result.train_seconds


def matmul_peak_flops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def bench_framework(reps: int) -> dict[str, Any]:
    """Whole 2-epoch runs: bare loop vs adrlab.train (framework overhead), interleaved."""
    base = ["optimizer=adamw", *BENCH_OVERRIDES]
    samples = interleaved(
        {
            "bare": lambda: bare_loop(base),
            "adrlab": lambda: adrlab_loop(base),
            "adrlab_no_step_logging": lambda: adrlab_loop([*base, "tracking.log_steps=false"]),
        },
        reps,
    )
    cfg = compose(base)
    data = build_data(cfg.data, cache_dir=tracking.runs_dir(cfg) / "cache")
    model = Transformer(cfg.model, vocab_size=data.vocab_size)
    steps = math.ceil(data.train.shape[0] / cfg.trainer.batch_size) * cfg.trainer.epochs
    tokens = steps * cfg.trainer.batch_size * cfg.data.seq_len
    tokens_per_s = tokens / statistics.median(samples["adrlab"])
    peak = matmul_peak_flops()
    return {
        "seconds": samples,
        "median_seconds": {k: statistics.median(v) for k, v in samples.items()},
        "framework_overhead": judge(paired_ratios(samples, "adrlab", "bare"), 0.05),
        "whole_run_logging_overhead": judge(paired_ratios(samples, "adrlab", "adrlab_no_step_logging"), 0.01),
        "tokens_per_s": tokens_per_s,
        "flops_per_token": model.flops_per_token(cfg.data.seq_len),
        "matmul_peak_gflops": peak / 1e9,
        "mfu": tokens_per_s * model.flops_per_token(cfg.data.seq_len) / peak,
    }


LOGGING_BASE = ["optimizer=rmsuon", "trainer.progress=off", "trainer.checkpoint=false"]


def bench_logging(reps: int, pairs: int = 24) -> dict[str, Any]:
    """The logging path at the step level, its two parts apart, as shares of a step's time.

    statistics: adjacent pairs of real training steps (train.train_step on the smoke model),
    one a logging step (grad norm, optimizer statistics, log_step's point) and one not, in
    alternating order; the median paired difference is what a logging step adds, paid once per
    log_every steps. writes: one epoch's buffered points plus its epoch metrics sent to the
    run's SQLite store (RunLogger.flush, once per epoch), spread over the epoch's steps.
    Each repetition gives one share of each; the first repetition warms up and is dropped."""
    from adrlab.train import build, prepare, start

    plan = prepare(compose(LOGGING_BASE))
    setup = build(plan)
    state = start(setup, plan)
    log_every = int(setup.cfg.trainer.log_every)
    shares: dict[str, list[float]] = {"statistics": [], "writes": [], "total": []}
    step_ms, stats_ms, write_ms = [], [], []
    for rep in range(reps + 1):
        plain, extra = _logging_pairs(setup, state, pairs, rep)
        state.logger.flush()  # what the pairs buffered; the writes are timed on their own below
        writes = _epoch_writes(setup, state, log_every)
        if rep == 0:
            continue
        step = statistics.median(plain)
        shares["statistics"].append(statistics.median(extra) / log_every / step)
        shares["writes"].append(writes / setup.steps_per_epoch / step)
        shares["total"].append(shares["statistics"][-1] + shares["writes"][-1])
        step_ms.append(1e3 * step)
        stats_ms.append(1e3 * statistics.median(extra))
        write_ms.append(1e3 * writes)
    return {
        "log_every": log_every,
        "steps_per_epoch": setup.steps_per_epoch,
        "step_ms": statistics.median(step_ms),
        "statistics_ms_per_logging_step": statistics.median(stats_ms),
        "writes_ms_per_epoch": statistics.median(write_ms),
        **{f"{k}_share": judge(v, 0.01) for k, v in shares.items()},
    }


def _logging_pairs(setup: Any, state: Any, pairs: int, rep: int) -> tuple[list[float], list[float]]:
    """Seconds of plain steps, and of (logging step − plain step) per adjacent pair."""
    from adrlab.train import log_step, train_step

    batch = setup.data.train[: setup.batch_size]
    plain, extra = [], []
    for i in range(pairs):
        seconds = {}
        for measure in (False, True) if (i + rep) % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            loss, gnorm = train_step(setup, batch, state.global_step, measure)
            state.global_step += 1
            if measure:
                log_step(setup, state, float(loss), float(gnorm), 0.0)
            else:
                float(loss)  # the read-back both kinds of step share (once per log_every in train)
            seconds[measure] = time.perf_counter() - t0
        plain.append(seconds[False])
        extra.append(seconds[True] - seconds[False])
    return plain, extra


def _epoch_writes(setup: Any, state: Any, log_every: int) -> float:
    """Seconds to buffer one epoch's per-step points and epoch metrics and flush them."""
    keys = ["train_loss", "grad_norm", "weight_rms", "tokens_per_s", "decay", "lr", "wd"]
    keys += ["update_rms", "energy_mean", "energy_max"]
    epoch_keys = ["val_loss", "val_ppl", "train_loss_epoch", "epoch_time", "weight_rms_epoch"]
    epoch_keys += ["peak_memory_mb", "step_time_ms", "optimizer_step_share"]
    t0 = time.perf_counter()
    for point in range(setup.steps_per_epoch // log_every):
        state.logger.metrics({k: 0.5 + point for k in keys}, state.global_step + point)
    state.logger.metrics({k: 1.0 for k in epoch_keys}, 1)
    state.logger.flush()
    return time.perf_counter() - t0


def _step_setup(overrides: list[str]) -> tuple[Any, Any, torch.Tensor, int | None]:
    cfg = compose([*overrides, "trainer.progress=off"])
    torch.manual_seed(0)
    data = build_data(cfg.data, cache_dir=tracking.runs_dir(cfg) / "cache")
    model = Transformer(cfg.model, vocab_size=data.vocab_size)
    optimizer = build_optimizer(model, cfg, resolve_decay(cfg, 58))
    return model, optimizer, data.train[: cfg.trainer.batch_size], data.pad_id


def _time_steps(setup: tuple[Any, Any, torch.Tensor, int | None], steps: int) -> tuple[float, float]:
    """Seconds per training step and, inside it, per optimizer.step()."""
    model, optimizer, batch, pad_id = setup
    in_step = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        total, count = lm_loss(model(batch[:, :-1]), batch[:, 1:], pad_id)
        optimizer.zero_grad(set_to_none=True)
        (total / count).backward()
        step_start = time.perf_counter()
        optimizer.step()
        in_step += time.perf_counter() - step_start
    return (time.perf_counter() - start) / steps, in_step / steps


OPTIMIZER_VARIANTS = {
    "adamw": ["optimizer=adamw"],
    "muon": ["optimizer=muon"],
    "rmsuon": ["optimizer=rmsuon"],
    "ada_rmsuon": ["optimizer=ada_rmsuon"],
    "v_rmsuon": ["experiment=v_rmsuon"],
    "rmsuon_polar_express": ["optimizer=rmsuon", "optimizer.ns_schedule=polar_express"],
}


def bench_optimizers(reps: int, steps: int = 10) -> dict[str, Any]:
    """Whole smoke-model steps per optimizer, every variant built once and timed round-robin
    (A B C … then … C B A); the ratio to AdamW is taken within each round."""
    setups = {name: _step_setup(overrides) for name, overrides in OPTIMIZER_VARIANTS.items()}
    for setup in setups.values():
        _time_steps(setup, 2)  # warm-up: allocators, optimizer state
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in setups}
    for rep in range(reps):
        for name in abba(list(setups), rep):
            samples[name].append(_time_steps(setups[name], steps))
    whole_step = {}
    for name, pairs in samples.items():
        ratios = [w / a for (w, _), (a, _) in zip(pairs, samples["adamw"], strict=True)]
        whole_step[name] = {
            "seconds": statistics.median(w for w, _ in pairs),
            "optimizer_seconds": statistics.median(o for _, o in pairs),
            "optimizer_share": median_interval([o / w for w, o in pairs]),
            "ratio_vs_adamw": judge(ratios, 1.3),
        }
    return {"whole_step": whole_step, "step_alone_paper_matrices": bench_step_alone(reps)}


PAPER_SHAPES = [(768, 512), (2048, 512)]  # q_proj and an MLP matrix of the paper model


def bench_step_alone(reps: int, steps: int = 4) -> dict[str, dict[str, Any]]:
    """optimizer.step() alone on one paper-size matrix, every (variant, shape) built once and
    timed round-robin in one process: ms per step, and the ratio to RMSuon within each round."""
    setups = {}
    for name, overrides in OPTIMIZER_VARIANTS.items():
        cfg = compose(overrides)
        for shape in PAPER_SHAPES:
            model = _MatrixModel(shape)
            optimizer = build_optimizer(model, cfg, resolve_decay(cfg, 100))
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            optimizer.step()  # warm-up: optimizer state
            setups[(name, f"{shape[0]}x{shape[1]}")] = optimizer
    seconds: dict[tuple[str, str], list[float]] = {k: [] for k in setups}
    for rep in range(reps):
        for key in abba(list(setups), rep):
            start = time.perf_counter()
            for _ in range(steps):
                setups[key].step()
            seconds[key].append((time.perf_counter() - start) / steps)
    out: dict[str, dict[str, Any]] = {}
    for (name, shape), values in seconds.items():
        ratios = [a / b for a, b in zip(values, seconds[("rmsuon", shape)], strict=True)]
        out.setdefault(name, {})[shape] = {
            "ms": median_interval([1e3 * v for v in values]),
            "ratio_vs_rmsuon": median_interval(ratios),
        }
    return out


class _MatrixModel(torch.nn.Module):
    """One hidden matrix, so routing sends it to the structured group."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(shape[1], shape[0], bias=False)

    def param_roles(self) -> dict[str, str]:
        return {"proj.weight": "matrix"}


# Repetitions per suite at the default --reps (9): order-statistic intervals reach 95% from 6.
WHOLE_RUN_REPS = 6  # each repetition is three 2-epoch runs


def run_bench(suites: list[str], reps: int, threads: int | None = None) -> Path:
    """Run the chosen suites and merge them into reports/bench/bench.json: suites not run this
    time keep their last figures, each stamped with when and where it was measured.
    threads: torch threads (default all cores; 1 on a machine others are loading too)."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ["ADRLAB_WORKERS"] = str(max(1, (os.cpu_count() or 1) // threads))  # train() uses as many
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    out_dir = reports_root() / "bench"
    previous_path = out_dir / "bench.json"
    results: dict[str, Any] = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    results["machine"] = machine
    measured = {"measured_at": time.strftime("%Y-%m-%d %H:%M"), "machine": machine}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ADRLAB_RUNS_DIR"] = tmp  # benchmark runs stay out of the user's store
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        for suite in suites:
            results[suite] = {**run_suite(suite, reps, Path(tmp)), **measured}
    return write_report(results, out_dir)


def run_suite(suite: str, reps: int, scratch: Path) -> dict[str, Any]:
    if suite == "framework":
        return bench_framework(min(reps, WHOLE_RUN_REPS))
    if suite == "logging":
        return bench_logging(reps)
    if suite == "optimizers":
        return bench_optimizers(reps)
    if suite == "sweep":
        from adrlab.sweep.bench import bench_sweep_efficiency

        return bench_sweep_efficiency()
    if suite == "workers":
        from adrlab.sweep.bench import bench_worker_scaling

        return bench_worker_scaling()
    if suite == "readback":
        from adrlab.readback import REPORT_REPS, bench_readback

        return {"sizes": bench_readback(READBACK_SIZES, scratch, reps=min(reps, REPORT_REPS))}
    raise ValueError(f"unknown bench suite {suite!r}")


READBACK_SIZES = [(50, 1000), (500, 10_000)]  # (trials per sweep arm, unrelated runs)
