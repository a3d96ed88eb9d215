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
from adrlab.config import compose, reports_root
from adrlab.data import build_data
from adrlab.mdtable import markdown_table
from adrlab.model import Transformer
from adrlab.optim import build_optimizer, resolve_decay, set_step_hyperparams
from adrlab.schedules import build_schedule
from adrlab.train import epoch_order, evaluate, lm_loss, train

BENCH_OVERRIDES = ["trainer.epochs=2", "trainer.progress=off", "trainer.checkpoint=true"]


def _median_interleaved(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            samples[name].append(fn())
    return samples


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
    base = ["optimizer=adamw", *BENCH_OVERRIDES]
    samples = _median_interleaved(
        {
            "bare": lambda: bare_loop(base),
            "adrlab": lambda: adrlab_loop(base),
            "adrlab_no_step_logging": lambda: adrlab_loop([*base, "tracking.log_steps=false"]),
        },
        reps,
    )
    med = {k: statistics.median(v) for k, v in samples.items()}
    cfg = compose(base)
    data = build_data(cfg.data, cache_dir=tracking.runs_dir(cfg) / "cache")
    model = Transformer(cfg.model, vocab_size=data.vocab_size)
    steps = math.ceil(data.train.shape[0] / cfg.trainer.batch_size) * cfg.trainer.epochs
    tokens = steps * cfg.trainer.batch_size * cfg.data.seq_len
    tokens_per_s = tokens / med["adrlab"]
    peak = matmul_peak_flops()
    return {
        "seconds": samples,
        "median_seconds": med,
        "framework_overhead": med["adrlab"] / med["bare"] - 1.0,
        "logging_overhead": med["adrlab"] / med["adrlab_no_step_logging"] - 1.0,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": model.flops_per_token(cfg.data.seq_len),
        "matmul_peak_gflops": peak / 1e9,
        "mfu": tokens_per_s * model.flops_per_token(cfg.data.seq_len) / peak,
    }


def _step_time(optimizer_overrides: list[str], reps: int, steps: int = 20) -> list[tuple[float, float]]:
    """Seconds per training step and, inside it, per optimizer.step(), one pair a repetition."""
    cfg = compose([*optimizer_overrides, "trainer.progress=off"])
    torch.manual_seed(0)
    data = build_data(cfg.data, cache_dir=tracking.runs_dir(cfg) / "cache")
    model = Transformer(cfg.model, vocab_size=data.vocab_size)
    optimizer = build_optimizer(model, cfg, resolve_decay(cfg, 58))
    batch = data.train[: cfg.trainer.batch_size]
    out = []
    for r in range(reps + 1):
        in_step = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            logits = model(batch[:, :-1])
            total, count = lm_loss(logits, batch[:, 1:], data.pad_id)
            optimizer.zero_grad(set_to_none=True)
            (total / count).backward()
            step_start = time.perf_counter()
            optimizer.step()
            in_step += time.perf_counter() - step_start
        if r:  # the first repetition warms up allocators and caches
            out.append(((time.perf_counter() - start) / steps, in_step / steps))
    return out


OPTIMIZER_VARIANTS = {
    "adamw": ["optimizer=adamw"],
    "muon": ["optimizer=muon"],
    "rmsuon": ["optimizer=rmsuon"],
    "ada_rmsuon": ["optimizer=ada_rmsuon"],
    "v_rmsuon": ["experiment=v_rmsuon"],
}


def bench_optimizers(reps: int) -> dict[str, Any]:
    per_variant: dict[str, list[tuple[float, float]]] = {k: [] for k in OPTIMIZER_VARIANTS}
    for _ in range(reps):  # interleaved: each round times every variant once
        for name, overrides in OPTIMIZER_VARIANTS.items():
            per_variant[name] += _step_time(overrides, reps=1)
    med = {k: statistics.median(whole for whole, _ in v) for k, v in per_variant.items()}
    med_opt = {k: statistics.median(opt for _, opt in v) for k, v in per_variant.items()}
    # Forward + backward is the same work for every variant; its median over all of them
    # gives a ratio that only the optimizer step moves, steadier than the per-variant one.
    fwd_bwd = statistics.median(whole - opt for v in per_variant.values() for whole, opt in v)
    whole_step = {
        k: {
            "seconds": med[k],
            "optimizer_seconds": med_opt[k],
            "ratio_vs_adamw": med[k] / med["adamw"],
            "ratio_vs_adamw_pooled": (fwd_bwd + med_opt[k]) / (fwd_bwd + med_opt["adamw"]),
        }
        for k in med
    }

    # The optimizer step alone on paper-size matrices (q_proj 768×512, MLP 2048×512).
    shapes = [(768, 512), (2048, 512)]
    alone: dict[str, dict[str, float]] = {}
    for name, overrides in OPTIMIZER_VARIANTS.items():
        cfg = compose(overrides)
        times = {}
        for shape in shapes:
            model = _MatrixModel(shape)
            optimizer = build_optimizer(model, cfg, resolve_decay(cfg, 100))
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            for _ in range(3):
                optimizer.step()
            n = 10
            start = time.perf_counter()
            for _ in range(n):
                optimizer.step()
            times[f"{shape[0]}x{shape[1]}"] = (time.perf_counter() - start) / n
        alone[name] = times
    return {"whole_step": whole_step, "step_alone_paper_matrices": alone}


class _MatrixModel(torch.nn.Module):
    """One hidden matrix, so routing sends it to the structured group."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(shape[1], shape[0], bias=False)

    def param_roles(self) -> dict[str, str]:
        return {"proj.weight": "matrix"}


def _measured(suite: dict[str, Any]) -> str:
    if "measured_at" not in suite:
        return ""
    return f"Measured {suite['measured_at']} on {suite['machine']}."


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2, default=float))
    lines = ["# Benchmarks", "", f"Machine: {results['machine']}", ""]
    if "framework" in results:
        f = results["framework"]
        m = f["median_seconds"]
        lines += [
            "## Training loop (smoke model, AdamW, 2 epochs, medians of interleaved runs)",
            "",
            _measured(f),
            "",
            markdown_table(
                ["measure", "value", "target", "ok"],
                [
                    ["bare PyTorch loop (s)", m["bare"], "", ""],
                    ["adrlab train() (s)", m["adrlab"], "", ""],
                    ["adrlab without per-step logging (s)", m["adrlab_no_step_logging"], "", ""],
                    [
                        "framework overhead vs bare",
                        f"{f['framework_overhead']:+.1%}",
                        "≤ +5%",
                        "yes" if f["framework_overhead"] <= 0.05 else "NO",
                    ],
                    [
                        "MLflow per-step logging overhead",
                        f"{f['logging_overhead']:+.1%}",
                        "≤ +2%",
                        "yes" if f["logging_overhead"] <= 0.02 else "NO",
                    ],
                    ["tokens/s", f["tokens_per_s"], "", ""],
                    ["matmul peak (GFLOP/s, fp32, same threads)", f["matmul_peak_gflops"], "", ""],
                    ["model FLOP utilisation", f"{f['mfu']:.1%}", "", ""],
                ],
            ),
            "",
        ]
    if "optimizers" in results:
        o = results["optimizers"]
        rows = [
            [
                k,
                v["seconds"] * 1e3,
                v["optimizer_seconds"] * 1e3 if "optimizer_seconds" in v else "",
                f"{v['ratio_vs_adamw']:.3f}×",
                f"{v['ratio_vs_adamw_pooled']:.3f}×" if "ratio_vs_adamw_pooled" in v else "",
                "yes" if v["ratio_vs_adamw"] <= 1.3 else "NO",
            ]
            for k, v in o["whole_step"].items()
        ]
        lines += [
            "## Whole training step by optimizer (smoke model, same batch)",
            "",
            _measured(o),
            "",
            markdown_table(
                ["optimizer", "ms/step", "of which optimizer.step()", "vs adamw", "pooled fwd+bwd", "≤ 1.3×"],
                rows,
            ),
            "",
            "The pooled column adds each optimizer's step to the median forward + backward over all "
            "variants (the same work for each), so run-to-run noise in the model's own time cancels; "
            "the verdict uses the measured ratio.",
            "",
        ]
        alone = o["step_alone_paper_matrices"]
        shapes = list(next(iter(alone.values())))
        rows = [[k, *[v[s] * 1e3 for s in shapes]] for k, v in alone.items()]
        lines += [
            "## Optimizer step alone on paper-size matrices (ms)",
            "",
            markdown_table(["optimizer", *shapes], rows),
            "",
        ]
    if "sweep" in results:
        sw = results["sweep"]
        rows = [["exhaustive grid", sw["grid_points"], sw["grid_epochs"], sw["grid_best"], "", ""]]
        for seed, run in enumerate(sw["tpe_runs"]):
            rows.append(
                [
                    f"TPE + median pruning, seed {seed}",
                    run["trials"],
                    run["epochs"],
                    run["best"],
                    f"{run['best'] / sw['grid_best'] - 1:+.2%}",
                    f"{run['epochs'] / sw['grid_epochs']:.0%}",
                ]
            )
        lines += [
            "## Sweep efficiency (default study's space, discretised; objective best val PPL)",
            "",
            _measured(sw),
            "",
            markdown_table(["search", "trials", "epochs", "best", "gap to grid best", "epoch share"], rows),
            "",
            f"Mean gap {sw['mean_gap_to_grid_best']:+.2%} using {sw['mean_epoch_share']:.0%} of the grid's "
            f"epochs; target: {sw['target']}: {'met' if sw['ok'] else 'NOT met'}.",
            "",
        ]
    if "workers" in results:
        wk = results["workers"]
        labels = [k for k, v in wk.items() if isinstance(v, dict)]
        lines += [
            "## Worker scaling on CPU (same trials, journal storage)",
            "",
            _measured(wk),
            "",
            markdown_table(
                ["layout", "seconds", "trials/hour"],
                [[k, wk[k]["seconds"], wk[k]["trials_per_hour"]] for k in labels],
            ),
            "",
            f"Ratio {wk['ratio']:.2f}×; target {wk['target']}: {'met' if wk['ok'] else 'NOT met'}.",
            "",
        ]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


def run_bench(suites: list[str], reps: int) -> Path:
    """Run the chosen suites and merge them into reports/bench/bench.json: suites not run this
    time keep their last figures, each stamped with when and where it was measured."""
    torch.set_num_threads(os.cpu_count() or 1)
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
        if "framework" in suites:
            results["framework"] = {**bench_framework(reps), **measured}
        if "optimizers" in suites:
            results["optimizers"] = {**bench_optimizers(reps), **measured}
        if "sweep" in suites:
            from adrlab.sweep.bench import bench_sweep_efficiency

            results["sweep"] = {**bench_sweep_efficiency(), **measured}
        if "workers" in suites:
            from adrlab.sweep.bench import bench_worker_scaling

            results["workers"] = {**bench_worker_scaling(), **measured}
    return write_report(results, out_dir)
