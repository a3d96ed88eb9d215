"""Optuna driven directly: one study in shared storage, N worker processes, each
ask → compose → train (report/prune per epoch) → tell, through `adrlab.train.train`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from adrlab import run_names, tracking
from adrlab.config import compose
from adrlab.sweep.spec import SweepSpec, load_spec
from adrlab.sweep.storage import (
    ATTR_FAIL_REASON,
    ATTR_RETRY_OF,
    ATTR_WORKER,
    default_storage_url,
    is_rdb,
    open_storage,
    shown_storage,
)
from adrlab.train import Pruned, train

TAG_SWEEP = "adrlab.sweep"
TAG_TRIAL = tracking.TAG_TRIAL
TAG_STORAGE = "adrlab.storage"
TAG_SWEEP_PARENT = "adrlab.sweep_parent"

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and stale-trial retries are marked experimental; they are what we rely on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --------------------------------------------------------------------------- study


def create_or_load_study(spec: SweepSpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction=spec.direction,
        sampler=spec.make_sampler(),
        pruner=spec.make_pruner(),
        load_if_exists=True,
    )
    for point in spec.enqueue:
        study.enqueue_trial(point, skip_if_exists=True)
    return study


# --------------------------------------------------------------------------- recovery


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_alive(trial: optuna.trial.FrozenTrial) -> bool | None:
    """Whether the worker that owns a RUNNING trial may still finish it: None when no worker is
    recorded yet; True for a worker on another host (its heartbeat or restart decides); on this
    host, whether its pid is alive."""
    owner = str(trial.user_attrs.get(ATTR_WORKER, ""))
    if not owner:
        return None
    owner_host, _, owner_pid = owner.rpartition(":")
    return owner_host != socket.gethostname() or (owner_pid.isdigit() and pid_alive(int(owner_pid)))


def recover_dead_trials(study: optuna.Study, storage_url: str, uri: str, experiment: str) -> list[int]:
    """Trials left RUNNING by a killed worker end FAIL, their parameters are enqueued again,
    and their MLflow runs are marked KILLED. Returns the trial numbers recovered.

    RDB storage: the heartbeat decides (optuna.storages.fail_stale_trials; its retry callback
    re-enqueues). Journal storage (one machine): a RUNNING trial whose worker pid on this host
    is gone is dead; so is one with no worker recorded, since no worker of ours runs yet.
    """
    recovered: list[int] = []
    if is_rdb(storage_url):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        recovered = sorted(before - after)
    else:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if worker_alive(trial):  # None (no worker recorded) is dead here: none of ours runs yet
                continue
            # The attribute first: a finished trial's attributes can no longer change.
            study._storage.set_trial_user_attr(trial._trial_id, ATTR_FAIL_REASON, "worker died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(dict(trial.params), user_attrs={ATTR_RETRY_OF: trial.number})
            recovered.append(trial.number)
    if recovered:
        mark_runs_killed(uri, experiment, study.study_name, recovered)
    return recovered


def reconcile_runs(study: optuna.Study, uri: str, experiment: str) -> list[int]:
    """MLflow child runs still RUNNING whose trial is no longer running were killed with their
    worker (e.g. a heartbeat retry on PostgreSQL): mark them KILLED instead of leaving them RUNNING."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    runs = tracking.search_runs(
        uri, [experiment], f"tags.`{TAG_SWEEP}` = '{study.study_name}'", statuses=["RUNNING"]
    )
    if runs.empty or f"tags.{TAG_TRIAL}" not in runs:
        return []
    stale = sorted({int(n) for n in runs[f"tags.{TAG_TRIAL}"].dropna() if int(n) not in running})
    if stale:
        mark_runs_killed(uri, experiment, study.study_name, stale)
    return stale


def mark_runs_killed(uri: str, experiment: str, sweep: str, numbers: list[int]) -> None:
    runs = tracking.search_runs(uri, [experiment], f"tags.`{TAG_SWEEP}` = '{sweep}'", statuses=["RUNNING"])
    if runs.empty:
        return
    c = tracking.client(uri)
    for _, row in runs.iterrows():
        if str(row.get(f"tags.{TAG_TRIAL}")) in {str(n) for n in numbers}:
            run_id = row["run_id"]
            tracking.with_retry(lambda run_id=run_id: c.set_tag(run_id, tracking.TAG_STATE, "KILLED"))
            tracking.with_retry(lambda run_id=run_id: c.set_tag(run_id, tracking.TAG_FAILURE, "worker died"))
            tracking.with_retry(lambda run_id=run_id: c.set_terminated(run_id, status="KILLED"))


# --------------------------------------------------------------------------- trials


def counted_trials(study: optuna.Study) -> int:
    """Trials that used their budget: complete, pruned, or failed by divergence (not kills)."""

    def counts(t: optuna.trial.FrozenTrial) -> bool:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        reason = str(t.user_attrs.get(ATTR_FAIL_REASON, ""))
        return t.state == TrialState.FAIL and reason.startswith("diverged")

    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def budget_spent(study: optuna.Study, n_trials: int) -> bool:
    """Done when n_trials are counted and no retried (enqueued) trial still waits."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return counted_trials(study) >= n_trials and not waiting


def trials_in_flight(study: optuna.Study) -> int:
    """RUNNING trials whose worker may still finish them: any on another host (its heartbeat
    or its own restart decides), and on this host those whose worker pid is alive or not yet
    recorded (a trial just asked for)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(1 for trial in running if worker_alive(trial) is not False)


def budget_claimed(study: optuna.Study, n_trials: int) -> bool:
    """No new trial is needed: counted trials plus those other workers are running reach
    n_trials. Counting the running ones keeps a worker that finishes early from starting a
    trial beyond the budget (which would leave it running alone at the end). A running trial
    that fails without counting leaves its own worker to run the replacement."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return counted_trials(study) + trials_in_flight(study) >= n_trials and not waiting


def stop_at(n_trials: int):
    def callback(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        # A trial whose worker died on another node must not hold the budget: on RDB storage
        # fail it now (its retry is enqueued) rather than at this worker's next trial.
        optuna.storages.fail_stale_trials(study)
        if budget_claimed(study, n_trials):
            study.stop()

    return callback


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in spec.space:  # conditions refer to earlier categorical parameters
        if not p.is_active(values):
            continue
        if p.type == "categorical":
            values[p.key] = trial.suggest_categorical(p.key, p.choices)
        elif p.type == "int":
            values[p.key] = trial.suggest_int(
                p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
            )
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return values


@dataclass
class TrialContext:
    spec: SweepSpec
    storage_url: str
    parent_run_id: str | None
    reuse: bool


def pruning_callback(trial: optuna.Trial, spec: SweepSpec, active: bool):
    """Report the objective so far after each epoch and stop the run when the pruner says so."""
    seen: list[dict[str, float]] = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        seen.append(metrics)
        if not active:
            return
        value = spec.objective_of(seen)
        trial.report(value, epoch)
        if trial.should_prune():
            raise Pruned(f"{spec.pruner['name']} pruner at epoch {epoch}: {spec.metric}={value:.4g}")

    return on_epoch


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> float:
    spec = ctx.spec
    trial.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
    values = suggest(trial, spec)
    overrides = spec.overrides_for(
        values, [f"tracking.experiment={spec.experiment}", f"tracking.reuse={str(ctx.reuse).lower()}"]
    )
    tags = {
        **spec.tags,
        TAG_SWEEP: spec.name,
        TAG_TRIAL: str(trial.number),
        TAG_STORAGE: shown_storage(ctx.storage_url, relative=False),
    }
    objectives: list[float] = []
    for i, seed in enumerate(spec.seeds):
        cfg = compose(overrides if seed is None else [*overrides, f"seed={seed}"])
        seed = int(cfg.seed)
        shown = values if len(spec.seeds) == 1 else {**values, "seed": seed}
        cfg.tracking.run_name = run_names.run_name(cfg, tags, shown)  # `t07 λ=0.031 cosine`
        on_epoch = pruning_callback(trial, spec, active=i == 0)  # the first seed drives pruning
        result = train(cfg, epoch_callback=on_epoch, parent_run_id=ctx.parent_run_id, extra_tags=tags)
        trial.set_user_attr(f"run_id_seed{seed}", result.run_id)
        if result.reused_from:
            trial.set_user_attr(f"reused_seed{seed}", result.reused_from)
            if i == 0:
                for row in result.epochs:
                    trial.report(
                        spec.objective_of([e for e in result.epochs if e["epoch"] <= row["epoch"]]),
                        int(row["epoch"]),
                    )
        if result.state == "PRUNED":
            _tag_run(cfg, result.run_id, "prune_reason", result.failure_reason or "")
            raise optuna.TrialPruned(result.failure_reason)
        if result.state == "DIVERGED":
            trial.set_user_attr(ATTR_FAIL_REASON, f"diverged: {result.failure_reason}")
            return math.nan  # Optuna records NaN as FAIL; the study goes on
        objectives.append(spec.objective_of(result.epochs))
    return statistics.fmean(objectives)


def _tag_run(cfg, run_id: str, key: str, value: str) -> None:
    c = tracking.client(tracking.tracking_uri(cfg))
    tracking.with_retry(lambda: c.set_tag(run_id, key, value))


# --------------------------------------------------------------------------- workers


def worker_main(
    spec_ref: str,
    cli_overrides: list[str],
    n_trials: int,
    storage_url: str,
    parent_run_id: str | None,
    worker_index: int,
    n_workers: int,
    gpu: int | None,
    reuse: bool,
) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        os.environ["ADRLAB_WORKERS"] = "1"
    else:
        os.environ["ADRLAB_WORKERS"] = str(n_workers)
    os.environ.setdefault("ADRLAB_QUIET", "1")
    spec = load_spec(spec_ref, cli_overrides, n_trials)
    study = optuna.load_study(
        study_name=spec.name,
        storage=open_storage(storage_url),
        sampler=spec.make_sampler(seed_offset=worker_index),
        pruner=spec.make_pruner(),
    )
    if budget_claimed(study, n_trials):
        return
    ctx = TrialContext(spec, storage_url, parent_run_id, reuse)
    study.optimize(
        lambda trial: run_trial(trial, ctx),
        callbacks=[stop_at(n_trials)],
        gc_after_trial=False,
        show_progress_bar=False,
    )


@dataclass
class SweepOutcome:
    spec: SweepSpec
    storage_url: str
    parent_run_id: str
    recovered: list[int]
    counted: int
    exit_codes: list[int]


def ensure_parent_run(uri: str, experiment_id: str, spec: SweepSpec, storage_url: str) -> str:
    storage_tag = shown_storage(storage_url, relative=False)
    runs = tracking.search_runs(
        uri,
        [spec.experiment],
        f"tags.`{TAG_SWEEP_PARENT}` = '{spec.name}' and tags.`{TAG_STORAGE}` = '{storage_tag}'",
    )
    c = tracking.client(uri)
    if not runs.empty:
        run_id = str(runs.sort_values("start_time").iloc[0]["run_id"])
        tracking.with_retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    run = tracking.with_retry(
        lambda: c.create_run(
            experiment_id,
            tags={
                TAG_SWEEP_PARENT: spec.name,
                TAG_SWEEP: spec.name,
                TAG_STORAGE: storage_tag,
            },
            run_name=f"sweep {spec.name}",
        )
    )
    logger = tracking.RunLogger(uri, run.info.run_id)
    logger.params(
        {
            "sweep.spec": str(spec.path),
            "sweep.overrides": " ".join(spec.overrides),
            "sweep.sampler": spec.sampler["name"],
            "sweep.pruner": spec.pruner["name"],
            "sweep.n_trials": spec.n_trials,
            "sweep.objective": f"{spec.statistic} {spec.metric} ({spec.direction})",
            "sweep.seeds": ",".join(map(str, spec.seeds)),
            "sweep.space": ", ".join(spec.keys),
        }
    )
    return run.info.run_id


def default_workers() -> tuple[int, list[int | None]]:
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:
        gpus = 0
    if gpus:
        return gpus, list(range(gpus))
    return max(1, os.cpu_count() or 1), []


def run_sweep(
    spec_ref: str,
    *,
    workers: int | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
    cli_overrides: list[str] | None = None,
    reuse: bool = True,
    write_report: bool = True,
) -> SweepOutcome:
    spec = load_spec(spec_ref, cli_overrides, n_trials)
    storage_url = storage or default_storage_url(spec)
    study = create_or_load_study(spec, open_storage(storage_url))
    # Created here, before any worker starts: concurrent creation races in MLflow.
    cfg = compose(spec.overrides)
    uri = tracking.tracking_uri(cfg)
    experiment_id = tracking.ensure_experiment(uri, spec.experiment, cfg)
    recovered = recover_dead_trials(study, storage_url, uri, spec.experiment)
    parent = ensure_parent_run(uri, experiment_id, spec, storage_url)

    n_default, gpus = default_workers()
    n_workers = workers or n_default
    done_before = counted_trials(study)
    _say(
        f"sweep {spec.name}: {done_before}/{spec.n_trials} trials done; {n_workers} worker(s); "
        f"storage {shown_storage(storage_url)}"
        + (f"; recovered killed trial(s) {recovered}" if recovered else "")
    )
    procs = start_workers(spec, cli_overrides, storage_url, parent, n_workers, gpus, reuse)
    try:
        _wait_with_progress(procs, study, spec.n_trials)
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise
    codes = [proc.exitcode if proc.exitcode is not None else -1 for proc in procs]
    if any(code != 0 for code in codes):
        recovered += recover_dead_trials(study, storage_url, uri, spec.experiment)
    reconcile_runs(study, uri, spec.experiment)
    counted = counted_trials(study)
    c = tracking.client(uri)
    status = "FINISHED" if budget_spent(study, spec.n_trials) else "FAILED"
    tracking.with_retry(lambda: c.set_terminated(parent, status=status))
    outcome = SweepOutcome(spec, storage_url, parent, recovered, counted, codes)
    if write_report:
        from adrlab.sweep.report import write_sweep_report

        path = write_sweep_report(str(spec.path), storage=storage_url, cli_overrides=cli_overrides)
        _say(f"sweep {spec.name}: report {path}")
    return outcome


def start_workers(
    spec: SweepSpec,
    cli_overrides: list[str] | None,
    storage_url: str,
    parent: str,
    n_workers: int,
    gpus: list[int | None],
    reuse: bool,
) -> list[Any]:
    """N spawned worker processes sharing the study, GPUs dealt round-robin."""
    context = mp.get_context("spawn")
    procs = []
    for i in range(n_workers):
        gpu = gpus[i % len(gpus)] if gpus else None
        args = (
            str(spec.path),
            list(cli_overrides or []),
            spec.n_trials,
            storage_url,
            parent,
            i,
            n_workers,
            gpu,
            reuse,
        )
        proc = context.Process(target=worker_main, args=args, name=f"adrlab-sweep-{i}")
        proc.start()
        procs.append(proc)
    return procs


def _wait_with_progress(procs: list, study: optuna.Study, n_trials: int) -> None:
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() and not os.environ.get("ADRLAB_QUIET")
    bar = tqdm(total=n_trials, desc="trials", disable=not show, dynamic_ncols=True)
    seen = 0
    while any(p.is_alive() for p in procs):
        time.sleep(1.0)
        try:
            now = counted_trials(study)
        except Exception:  # storage busy for a moment; the next poll will do
            continue
        bar.update(max(0, now - seen))
        seen = max(seen, now)
    for p in procs:
        p.join()
    bar.close()


def _say(text: str) -> None:
    print(f"adrlab: {text}", file=sys.stderr)
