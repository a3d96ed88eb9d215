"""Reading back at scale: a synthetic tracking store with real per-epoch and per-step metric
histories, and the time `adrlab report --adr` and the sweep report take on it.

The store holds ADR-0004's two sweep arms (each `trials` finished trials × 2 seeds, one run
per trial and seed, as the sweep runner logs them) and their control arm (`no_decay`, one run per
seed of the ADR, as `adrlab adr run` logs it: the acts guard compares every sweep run with it)
among `unrelated` runs of other studies, half of them in the arms' own experiments (another
sweep's tag) so the tag filter has work to do.
Rows go straight into MLflow's tables through its own SQLAlchemy models (creating 10,000 runs
through the client API would take longer than the read it is meant to time); the Optuna study
gets the same trials through `create_trial`. Everything lives in a scratch project root.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from adrlab import tracking

EPOCHS, STEPS_PER_EPOCH, LOG_EVERY = 10, 58, 10
EPOCH_KEYS = ("val_ppl", "val_loss", "train_loss_epoch", "weight_rms_epoch", "epoch_time")
STEP_KEYS = ("train_loss", "grad_norm", "lr", "wd", "decay", "weight_rms", "tokens_per_s")
ADR_NUMBER, ADR_FILE = "0004", "0004-decoupled-vs-coupled-decay.md"
ARMS = {"adamw_decoupled_lambda": (1e-3, 1.0, "decoupled"), "adamw_l2_lambda": (1e-5, 1e-2, "l2")}
CONTROL, CONTROL_SEEDS = "no_decay", (1, 2, 3, 4, 5)  # ADR-0004's control arm and its seeds
CONTROL_LAMBDA = 1e-6  # its curve: the synthetic history of a λ far below both grids


def _spec(name: str, trials: int) -> dict[str, Any]:
    low, high, regularizer = ARMS[name]
    return {
        "name": name,
        "base": {"overrides": ["optimizer=adamw", f"regularizer={regularizer}", "scale=smoke"]},
        "space": {"regularizer.weight_decay": {"type": "float", "low": low, "high": high, "log": True}},
        "sampler": {"name": "tpe", "seed": 0},
        "n_trials": trials,
        "objective": {"metric": "val_ppl", "statistic": "best", "direction": "minimize"},
        "seeds": [1, 2],
        "tracking": {"experiment": f"sweep-{name}"},
    }


@contextmanager
def scratch_project(root: Path, trials: int) -> Iterator[Path]:
    """A project root holding conf/, ADR-0004 and its two sweep specs (sized to `trials`), with
    runs/ and reports/ inside it; the environment points there for the duration."""
    from adrlab.config import project_root

    source = project_root()
    shutil.copytree(source / "conf", root / "conf")
    (root / "adr").mkdir()
    shutil.copy(source / "adr" / ADR_FILE, root / "adr" / ADR_FILE)
    (root / "sweeps").mkdir()
    for name in ARMS:
        (root / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(_spec(name, trials), sort_keys=False))
    keys = ("ADRLAB_ROOT", "ADRLAB_RUNS_DIR", "ADRLAB_REPORTS_DIR", "MLFLOW_TRACKING_URI")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(
        ADRLAB_ROOT=str(root), ADRLAB_RUNS_DIR=str(root / "runs"), ADRLAB_REPORTS_DIR=str(root / "reports")
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield root
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _history(run_id: str, lam: float, seed: int, step_keys: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """A plausible curve: val PPL falls, then rises by an amount set by λ; steps every LOG_EVERY."""
    rng = random.Random(f"{run_id}")
    floor = 40 + 30 * abs(math.log10(lam) + 1.5) + rng.random()
    for epoch in range(1, EPOCHS + 1):
        ppl = floor * (1 + 2.0 / epoch + 0.01 * max(0, epoch - 4) * (1 + seed))
        values = (ppl, math.log(ppl), math.log(ppl) - 0.1, 0.05 + 0.01 * epoch, 6.0 + rng.random())
        for key, value in zip(EPOCH_KEYS, values, strict=True):
            yield {"key": key, "value": value, "step": epoch, "timestamp": epoch * 1000}
    for step in range(LOG_EVERY, EPOCHS * STEPS_PER_EPOCH + 1, LOG_EVERY):
        for key in step_keys:
            yield {
                "key": key,
                "value": 1.0 / math.sqrt(step) + rng.random() * 1e-3,
                "step": step,
                "timestamp": step,
            }


def _run_rows(
    experiment_id: int, sweep: str, trial: int, seed: int, lam: float, steps: tuple, arm: str = ""
) -> dict:
    """A sweep's trial run, or (``arm``) a run of ADR-0004's own arm at smoke."""
    run_id = uuid.uuid4().hex
    start = 1_700_000_000_000 + trial * 60_000 + seed
    identity = (
        {tracking.TAG_ADR: ADR_NUMBER, tracking.TAG_ADR_SCALE: "smoke", tracking.TAG_ARM: arm}
        if arm
        else {tracking.TAG_SWEEP: sweep, tracking.TAG_TRIAL: str(trial)}
    )
    tags = {
        **identity,
        tracking.TAG_SEED: str(seed),
        tracking.TAG_STATE: "COMPLETE",
        tracking.TAG_SCALE: "smoke",
    }
    params = {
        "regularizer.weight_decay": repr(lam),
        "optimizer.name": "adamw",
        "optimizer.lr": "0.003",
        "derived.steps_per_epoch": str(STEPS_PER_EPOCH),
    }
    metrics = [{**m, "run_uuid": run_id, "is_nan": False} for m in _history(run_id, lam, seed, steps)]
    latest = {m["key"]: m for m in metrics}  # last logged value per key (steps ascend)
    run = {
        "run_uuid": run_id,
        "name": f"{arm}-s{seed}" if arm else f"{sweep}-{trial}",
        "source_type": "LOCAL",
        "source_name": "",
        "entry_point_name": "",
        "user_id": "bench",
        "status": "FINISHED",
        "start_time": start,
        "end_time": start + 50_000,
        "source_version": "",
        "lifecycle_stage": "active",
        "artifact_uri": "",
        "experiment_id": experiment_id,
    }
    return {
        "run": run,
        "tags": [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()],
        "params": [{"key": k, "value": v, "run_uuid": run_id} for k, v in params.items()],
        "metrics": metrics,
        "latest": list(latest.values()),
    }


def _insert(uri: str, batches: list[dict]) -> None:
    import sqlalchemy
    from mlflow.store.tracking.dbmodels import models

    tables = {
        "run": models.SqlRun.__table__,
        "tags": models.SqlTag.__table__,
        "params": models.SqlParam.__table__,
        "metrics": models.SqlMetric.__table__,
        "latest": models.SqlLatestMetric.__table__,
    }
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as conn:
        for part, table in tables.items():  # runs first: the other tables reference them
            rows = [row for b in batches for row in (b[part] if part != "run" else [b["run"]])]
            if rows:
                conn.execute(table.insert(), rows)
    engine.dispose()


def build_store(trials: int, unrelated: int, seed: int = 0) -> dict[str, Any]:
    """Fill the scratch project's store and Optuna journals (see the module docstring)."""
    import optuna

    from adrlab.sweep.spec import load_spec
    from adrlab.sweep.storage import default_storage_url, open_storage

    uri = tracking.tracking_uri(None)
    rng = random.Random(seed)
    experiments = {name: int(tracking.ensure_experiment(uri, f"sweep-{name}")) for name in ARMS}
    other = int(tracking.ensure_experiment(uri, "unrelated-studies"))
    batches = []
    for name, (low, high, _) in ARMS.items():
        spec = load_spec(name)
        study = optuna.create_study(study_name=name, storage=open_storage(default_storage_url(spec)))
        dist = optuna.distributions.FloatDistribution(low, high, log=True)
        for trial in range(trials):
            lam = math.exp(rng.uniform(math.log(low), math.log(high)))
            runs = [_run_rows(experiments[name], name, trial, s, lam, STEP_KEYS) for s in (1, 2)]
            batches += runs
            ppl = [m["value"] for m in runs[0]["metrics"] if m["key"] == "val_ppl"]
            attrs = {f"run_id_seed{s}": r["run"]["run_uuid"] for s, r in zip((1, 2), runs, strict=True)}
            study.add_trial(_trial(lam, dist, ppl, attrs))
    adr_experiment = int(tracking.ensure_experiment(uri, f"adr-{ADR_NUMBER}"))
    for seed in CONTROL_SEEDS:
        batches.append(_run_rows(adr_experiment, "", 0, seed, CONTROL_LAMBDA, STEP_KEYS, arm=CONTROL))
    for i in range(unrelated):
        home = [*experiments.values(), other, other][i % 4]
        batches.append(_run_rows(home, f"other-{i % 50}", i, 1, 10 ** rng.uniform(-4, 0), STEP_KEYS[:3]))
    rows = sum(len(b["metrics"]) for b in batches)
    _insert(uri, batches)
    return {"adr_runs": 2 * 2 * trials + len(CONTROL_SEEDS), "unrelated_runs": unrelated, "metric_rows": rows}


def _trial(lam: float, dist: Any, ppl: list[float], attrs: dict[str, str]):
    import optuna

    return optuna.trial.create_trial(
        params={"regularizer.weight_decay": lam},
        distributions={"regularizer.weight_decay": dist},
        value=min(ppl),
        intermediate_values={e: min(ppl[:e]) for e in range(1, len(ppl) + 1)},
        user_attrs=attrs,
    )


def _time_read(bulk: bool) -> float:
    from adrlab.adr.document import parse_adr
    from adrlab.adr.runs import EPOCH_METRICS, REPORT_STEP_METRICS, find_adr, stored_runs

    uri = tracking.tracking_uri(None)
    start = time.perf_counter()
    runs = stored_runs(parse_adr(find_adr("0004")), "smoke", uri)
    keys = [*EPOCH_METRICS, *REPORT_STEP_METRICS]
    if bulk:
        tracking.metric_histories(uri, runs["run_id"], keys)
    else:
        c = tracking.client(uri)
        for run_id in runs["run_id"]:
            for key in keys:
                c.get_metric_history(run_id, key)
    return time.perf_counter() - start


REPORT_REPS = 6  # [min, max] of 6 covers the median with 96.9% (benchstats)


def bench_readback(
    sizes: list[tuple[int, int]], scratch: Path, reps: int = REPORT_REPS
) -> list[dict[str, Any]]:
    """For each (trials per sweep arm, unrelated runs): build, then time both reports."""
    out = []
    for trials, unrelated in sizes:
        root = scratch / f"store-{trials}-{unrelated}"
        with scratch_project(root, trials):
            start = time.perf_counter()
            built = build_store(trials, unrelated)
            built["build_s"] = time.perf_counter() - start
            per_run = built["adr_runs"] <= 500
            out.append({"trials_per_arm": trials, **built, **time_reports(per_run=per_run, reps=reps)})
        shutil.rmtree(root, ignore_errors=True)
    return out


def time_reports(per_run: bool = True, reps: int = REPORT_REPS) -> dict[str, Any]:
    """Seconds for `adrlab report --adr 0004` (evidence, verdicts, plots, write-back) as a
    person runs it (a new process: imports and the lint it runs first included) and inside
    this process; for the sweep report of the decoupled arm; and for the read alone (finding
    the runs and their histories): bulk, and with `per_run` also through one
    get_metric_history call per run and metric (the path the bulk read replaced; minutes at
    10,000s of runs, so optional). Each report is timed `reps` times, the variants in turn;
    in-process repetitions start from empty memo caches, as a new process would."""
    from adrlab.sweep.report import write_sweep_report

    out: dict[str, Any] = {"read_s": _time_read(bulk=True)}
    if per_run:
        out["read_per_run_s"] = _time_read(bulk=False)
    times: dict[str, list[float]] = {"cli_report_s": [], "adr_report_s": [], "sweep_report_s": []}
    for _ in range(reps):
        times["cli_report_s"].append(_time_cli_report())
        times["adr_report_s"].append(_time_report_in_process())
        start = time.perf_counter()
        write_sweep_report("adamw_decoupled_lambda")
        times["sweep_report_s"].append(time.perf_counter() - start)
    for key, values in times.items():
        out[key] = statistics.median(values)
        out[key.removesuffix("_s") + "_reps"] = values
    return out


def _time_report_in_process() -> float:
    from adrlab.adr import stats
    from adrlab.adr.report import run_report
    from adrlab.config import clear_compose_cache

    clear_compose_cache()
    stats.t_quantile.cache_clear()
    start = time.perf_counter()
    code = run_report("0004")
    seconds = time.perf_counter() - start
    if code not in (0, 1):
        raise RuntimeError(f"adrlab report --adr 0004 exited {code} on the synthetic store")
    return seconds


def _time_cli_report() -> float:
    import torch

    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "adrlab", "report", "--adr", "0004"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=os.environ["ADRLAB_ROOT"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"adrlab report --adr 0004 exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds
