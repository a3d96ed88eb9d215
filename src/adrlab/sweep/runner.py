"""Optuna driven directly: one study in shared storage, N worker processes, each
ask → compose → train (report/prune per epoch) → tell, through `adrlab.train.train`.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from adrlab import run_names, signals, tracking
from adrlab.config import compose
from adrlab.runstore import checkpoint_path, epochs_of
from adrlab.sweep.report import write_sweep_report
from adrlab.sweep.spec import SpecError, SweepSpec, load_spec
from adrlab.sweep.storage import (  # several are re-exported: callers look for them here
    ATTR_FAIL_REASON,
    ATTR_RETRY_OF,
    ATTR_WORKER,
    STUDY_FAMILY,
    STUDY_N_TRIALS,
    STUDY_OVERRIDES,
    STUDY_SPEC,
    creation_lock,
    default_storage_url,
    heartbeat_settings,
    is_rdb,
    open_storage,
    project_relative,
    shown_storage,
    storage_identity,
    with_creation_retry,
)
from adrlab.train import Pruned, train

# The tags live in tracking (reading runs back must not import torch through this module).
TAG_SWEEP = tracking.TAG_SWEEP
TAG_TRIAL = tracking.TAG_TRIAL
TAG_STORAGE = tracking.TAG_STORAGE
TAG_SWEEP_PARENT = tracking.TAG_SWEEP_PARENT
SURPLUS = "surplus: the budget was claimed by other workers when this trial started"

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and stale-trial retries are marked experimental; they are what we rely on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --------------------------------------------------------------------------- study


def create_or_load_study(
    spec: SweepSpec, storage: optuna.storages.BaseStorage, cli_overrides: list[str] | None = None
) -> optuna.Study:
    """The study, created if missing (call under `creation_lock`; retried if another creator
    won anyway), with what it runs recorded as study attributes: the budget (the last command's
    --n-trials), the spec as shared records name it, and the overrides."""
    study = with_creation_retry(
        lambda: optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction=spec.direction,
            sampler=spec.make_sampler(),
            pruner=spec.make_pruner(),
            load_if_exists=True,
        )
    )
    for point in spec.enqueue:
        study.enqueue_trial(point, skip_if_exists=True)
    attrs = {
        STUDY_N_TRIALS: spec.n_trials,
        STUDY_SPEC: project_relative(spec.path),
        STUDY_OVERRIDES: list(cli_overrides or []),
        STUDY_FAMILY: load_spec(str(spec.path)).name if cli_overrides else spec.name,
    }
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def worker_seed_offset(storage_url: str, worker_index: int) -> int:
    """The sampler seed's offset for one worker. On one machine (journal storage) the worker
    index, so a study is reproducible where it was; on shared (RDB) storage also a hash of
    host and pid, since every node has a worker 0 and equal seeds draw equal trials."""
    if not is_rdb(storage_url):
        return worker_index
    digest = hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).hexdigest()
    return (worker_index + int(digest[:8], 16)) % 2**31


def check_shared_tracking(uri: str, storage_url: str) -> None:
    """Many nodes (an RDB study) need runs and artifacts every node reaches: an MLflow server.
    A database URL as the tracking URI would put each node's artifacts in its own ./mlruns."""
    if not is_rdb(storage_url) or "://" not in uri:
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":  # one machine with a shared study is fine; say where the runs stay
        _say(f"runs go to this node's {shown_storage(uri)}; other nodes need MLFLOW_TRACKING_URI=http://...")
    if scheme in ("postgresql", "mysql", "mssql", "oracle"):
        raise SpecError(
            f"MLFLOW_TRACKING_URI={shown_storage(uri)} is a database: with --storage "
            f"{shown_storage(storage_url)} (many nodes) each node would keep its artifacts in its "
            "own ./mlruns. Start an MLflow server on that database (mlflow server "
            "--backend-store-uri ... --artifacts-destination /shared/mlflow-artifacts, see "
            "docs/multinode.md) and set MLFLOW_TRACKING_URI=http://HOST:PORT"
        )


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


def _fail_dead_on_this_host(study: optuna.Study, unowned_dead: bool) -> list[int]:
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive = worker_alive(trial)
        if alive or (alive is None and not unowned_dead):
            continue
        try:  # the attribute first: a finished trial's attributes can no longer change
            study._storage.set_trial_user_attr(trial._trial_id, ATTR_FAIL_REASON, "worker died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker recovered it first
        study.enqueue_trial(dict(trial.params), user_attrs={ATTR_RETRY_OF: trial.number})
        recovered.append(trial.number)
    return recovered


def recover_dead_trials(
    study: optuna.Study, storage_url: str, uri: str, experiment: str, unowned_dead: bool = True
) -> list[int]:
    """Trials left RUNNING by a killed worker end FAIL, their parameters are enqueued again,
    and their MLflow runs are marked KILLED. Returns the trial numbers recovered.

    RDB storage: the heartbeat decides (optuna.storages.fail_stale_trials; its retry callback
    re-enqueues). Journal storage (one machine): a RUNNING trial whose worker pid on this host
    is gone is dead; so is one with no worker recorded when no worker of ours runs yet
    (unowned_dead; a worker passes False: such a trial is a sibling's, just asked for).
    """
    recovered: list[int] = []
    if is_rdb(storage_url):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        recovered = sorted(before - after)
    else:
        recovered = _fail_dead_on_this_host(study, unowned_dead)
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
    """Done when n_trials are counted. A retry still waiting then is not needed: the trial it
    replaces stopped holding budget when it failed, and another trial took its place."""
    return counted_trials(study) >= n_trials


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
    that fails without counting leaves its own worker to run the replacement. A waiting
    (enqueued) trial holds no budget: the next worker to ask pops it first."""
    return counted_trials(study) + trials_in_flight(study) >= n_trials


def surplus(trial: optuna.Trial, n_trials: int) -> bool:
    """Whether a trial just asked for is beyond the budget: workers that decide to ask at the
    same moment (on any node) cannot see each other's decision, so the trial checks once it is
    RUNNING, and the lower trial numbers keep their places."""
    ahead = [
        t
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.number < trial.number and worker_alive(t) is not False
    ]
    return counted_trials(trial.study) + len(ahead) >= n_trials


def stop_at(n_trials: int, ctx: TrialContext):
    def callback(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if signals.is_pending():  # stopped between trials: the worker loop raises it
            study.stop()
            return
        # A trial whose worker died must not hold the budget, and its parameters should be
        # what runs next, not a fresh sample: fail it now and enqueue its retry (RDB: the
        # heartbeat decides; a journal: a dead pid on this host).
        recover_dead_trials(study, ctx.storage_url, ctx.uri, ctx.spec.experiment, unowned_dead=False)
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
    uri: str = ""  # MLflow tracking URI; empty: the one the spec's overrides compose to

    def __post_init__(self) -> None:
        if not self.uri:
            self.uri = tracking.tracking_uri(compose(self.spec.overrides))


def pruning_callback(trial: optuna.Trial, spec: SweepSpec, active: bool, before: list[dict[str, float]]):
    """Report the objective so far after each epoch and stop the run when the pruner says so.
    `before`: the epochs a resumed run had already trained (reported again to this trial)."""
    seen: list[dict[str, float]] = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        seen.append(metrics)
        if not active:
            return
        value = spec.objective_of(seen)
        trial.report(value, epoch)
        if trial.should_prune():
            raise Pruned(f"{spec.pruner['name']} pruner at epoch {epoch}: {spec.metric}={value:.4g}")

    for row in before:
        seen.append(row)
        if active:
            trial.report(spec.objective_of(seen), int(row["epoch"]))
    return on_epoch


def resumable_run(trial: optuna.Trial, cfg, seed: int) -> str | None:
    """A retried trial continues the run its killed predecessor left, from that run's last
    checkpoint, when the checkpoint is reachable here (`trainer.checkpoint_dir` on a
    filesystem every node shares), so a node lost mid-trial costs at most one epoch."""
    storage = trial.study._storage
    history = storage.get_trial_system_attrs(trial._trial_id).get("retry_history") or []
    previous = history[-1] if history else trial.user_attrs.get(ATTR_RETRY_OF)
    if previous is None:
        return None
    trial_id = storage.get_trial_id_from_study_id_trial_number(trial.study._study_id, int(previous))
    run_id = storage.get_trial(trial_id).user_attrs.get(f"run_id_seed{seed}")
    if run_id and checkpoint_path(cfg, str(run_id)).is_file():
        return str(run_id)
    return None


def train_seed(trial: optuna.Trial, ctx: TrialContext, cfg, first: bool, tags: dict[str, str]):
    """One seed of a trial through `train()`; the trial's record names the run as soon as the
    run exists, so a killed trial still points to its MLflow run."""
    seed = int(cfg.seed)
    uri = tracking.tracking_uri(cfg)
    resume = resumable_run(trial, cfg, seed)
    before: list[dict[str, float]] = []
    if resume is not None:
        c = tracking.client(uri)
        tracking.with_retry(lambda: c.set_tag(resume, TAG_TRIAL, str(trial.number)))
        before = epochs_of(uri, resume)
    on_epoch = pruning_callback(trial, ctx.spec, active=first, before=before)
    return train(
        cfg,
        epoch_callback=on_epoch,
        parent_run_id=ctx.parent_run_id,
        extra_tags=tags,
        run_id=resume,
        on_run=lambda run_id: trial.set_user_attr(f"run_id_seed{seed}", run_id),
    )


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> float:
    try:
        signals.raise_if_pending()
        return _run_trial(trial, ctx)
    except KeyboardInterrupt as exc:
        # Optuna ends the trial FAIL when this propagates; the retry makes resume redo it.
        reason = "terminated" if isinstance(exc, signals.Terminated) else "interrupted"
        trial.set_user_attr(ATTR_FAIL_REASON, reason)
        trial.study.enqueue_trial(dict(trial.params), user_attrs={ATTR_RETRY_OF: trial.number})
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # its "trial failed" traceback is no news
        raise


def _run_trial(trial: optuna.Trial, ctx: TrialContext) -> float:
    spec = ctx.spec
    trial.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
    if surplus(trial, spec.n_trials):
        trial.set_user_attr(ATTR_FAIL_REASON, SURPLUS)
        return math.nan  # FAIL without counting; stop_at then stops this worker
    values = suggest(trial, spec)
    overrides = spec.overrides_for(
        values, [f"tracking.experiment={spec.experiment}", f"tracking.reuse={str(ctx.reuse).lower()}"]
    )
    tags = {
        **spec.tags,
        TAG_SWEEP: spec.name,
        TAG_TRIAL: str(trial.number),
        TAG_STORAGE: storage_identity(ctx.storage_url),
    }
    objectives: list[float] = []
    for i, seed in enumerate(spec.seeds):
        cfg = compose(overrides if seed is None else [*overrides, f"seed={seed}"])
        seed = int(cfg.seed)
        shown = values if len(spec.seeds) == 1 else {**values, "seed": seed}
        cfg.tracking.run_name = run_names.run_name(cfg, tags, shown)  # `t07 λ=0.031 cosine`
        result = train_seed(trial, ctx, cfg, i == 0, tags)
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


@dataclass
class WorkerArgs:
    spec_ref: str
    cli_overrides: list[str]
    n_trials: int
    storage_url: str
    parent_run_id: str | None
    worker_index: int
    n_workers: int
    gpu: int | None
    reuse: bool


def worker_main(args: WorkerArgs) -> None:
    # Ctrl-C (to the process group) or SIGTERM (from the parent): clean FAIL + KILLED, raised at
    # the next safe point (a training step, a trial's start, between trials), never inside a storage write.
    signals.install(deferred=True)
    try:
        _worker(args)
    except KeyboardInterrupt as exc:
        sys.exit(signals.exit_code(exc))


def _worker(args: WorkerArgs) -> None:
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
        os.environ["ADRLAB_WORKERS"] = "1"
    else:
        os.environ["ADRLAB_WORKERS"] = str(args.n_workers)
    os.environ.setdefault("ADRLAB_QUIET", "1")
    spec = load_spec(args.spec_ref, args.cli_overrides, args.n_trials)
    study = optuna.load_study(
        study_name=spec.name,
        storage=open_storage(args.storage_url),
        sampler=spec.make_sampler(seed_offset=worker_seed_offset(args.storage_url, args.worker_index)),
        pruner=spec.make_pruner(),
    )
    ctx = TrialContext(
        spec, args.storage_url, args.parent_run_id, args.reuse, tracking.tracking_uri(compose(spec.overrides))
    )
    while True:
        signals.raise_if_pending()
        if not budget_claimed(study, args.n_trials):
            study.optimize(
                lambda trial: run_trial(trial, ctx),
                callbacks=[stop_at(args.n_trials, ctx)],
                gc_after_trial=False,
                show_progress_bar=False,
            )
        if budget_spent(study, args.n_trials) or not linger_for_retries(
            study, args.n_trials, args.storage_url
        ):
            return


def linger_for_retries(study: optuna.Study, n_trials: int, storage_url: str) -> bool:
    """Nothing left to ask for, but trials still run on other workers: wait one heartbeat
    grace period, so that a node killed mid-trial shows up stale and its retry runs here rather
    than waiting for the next command. True when new work appeared (go on optimizing)."""
    if not is_rdb(storage_url):
        return False  # one machine: the command's own recovery and a rerun handle dead workers
    interval, grace = heartbeat_settings()
    deadline = time.monotonic() + grace + 2 * interval
    while time.monotonic() < deadline and trials_in_flight(study):
        time.sleep(interval)
        signals.raise_if_pending()
        optuna.storages.fail_stale_trials(study)
        if not budget_claimed(study, n_trials):
            return True
    return False


@dataclass
class SweepSetup:
    spec: SweepSpec
    storage_url: str
    study: optuna.Study
    uri: str
    parent_run_id: str
    recovered: list[int]


@dataclass
class SweepOutcome:
    spec: SweepSpec
    storage_url: str
    parent_run_id: str
    recovered: list[int]
    counted: int
    exit_codes: list[int]
    complete: bool = False  # the study's budget is spent and nothing runs anywhere
    running_elsewhere: int = 0  # trials other nodes' workers were still running when this node ended
    report_path: Path | None = None
    report_command: str = ""


def ensure_parent_run(uri: str, experiment_id: str, spec: SweepSpec, storage_url: str) -> str:
    """The study's one MLflow parent run, created by the first node (under `creation_lock`)."""
    storage_tag = storage_identity(storage_url)
    runs = tracking.search_runs(
        uri,
        [spec.experiment],
        f"tags.`{TAG_SWEEP_PARENT}` = '{spec.name}' and tags.`{TAG_STORAGE}` = '{storage_tag}'",
    )
    c = tracking.client(uri)
    if not runs.empty:
        run_id = str(runs.sort_values("start_time").iloc[0]["run_id"])
        if runs.set_index("run_id").loc[run_id, "status"] != "RUNNING":
            tracking.with_retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    tags = {TAG_SWEEP_PARENT: spec.name, TAG_SWEEP: spec.name, TAG_STORAGE: storage_tag}
    run = tracking.with_retry(lambda: c.create_run(experiment_id, tags=tags, run_name=f"sweep {spec.name}"))
    tracking.RunLogger(uri, run.info.run_id).params(
        {
            "sweep.spec": project_relative(spec.path),
            "sweep.overrides": " ".join(spec.overrides),
            "sweep.sampler": spec.sampler["name"],
            "sweep.pruner": spec.pruner["name"],
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


def prepare_sweep(spec: SweepSpec, storage_url: str, cli_overrides: list[str] | None) -> SweepSetup:
    """Schema, study, MLflow experiment and parent run, created once however many nodes start
    together (under one lock), and the recovery of trials left by dead workers."""
    cfg = compose(spec.overrides)
    uri = tracking.tracking_uri(cfg)
    check_shared_tracking(uri, storage_url)
    with creation_lock(storage_url):
        study = create_or_load_study(spec, open_storage(storage_url), cli_overrides)
        # Created here, before any worker starts: concurrent creation races in MLflow.
        experiment_id = tracking.ensure_experiment(uri, spec.experiment, cfg)
        parent = ensure_parent_run(uri, experiment_id, spec, storage_url)
    tracking.RunLogger(uri, parent).tags({"sweep.n_trials": spec.n_trials})
    recovered = recover_dead_trials(study, storage_url, uri, spec.experiment)
    return SweepSetup(spec, storage_url, study, uri, parent, recovered)


def start_workers(setup: SweepSetup, workers: int | None, cli_overrides: list[str], reuse: bool) -> list:
    n_default, gpus = default_workers()
    n_workers = workers or n_default
    spec = setup.spec
    _say(
        f"sweep {spec.name}: {counted_trials(setup.study)}/{spec.n_trials} trials done; {n_workers} "
        f"worker(s) on {socket.gethostname()}; storage {shown_storage(setup.storage_url)}"
        + (f"; recovered killed trial(s) {setup.recovered}" if setup.recovered else "")
    )
    context = mp.get_context("spawn")
    procs = []
    for i in range(n_workers):
        args = WorkerArgs(
            str(spec.path),
            list(cli_overrides),
            spec.n_trials,
            setup.storage_url,
            setup.parent_run_id,
            i,
            n_workers,
            gpus[i % len(gpus)] if gpus else None,
            reuse,
        )
        proc = context.Process(target=worker_main, args=(args,), name=f"adrlab-sweep-{i}")
        proc.start()
        procs.append(proc)
    return procs


def stop_workers(procs: list, timeout: float = 60.0) -> None:
    """After Ctrl-C or SIGTERM: every worker gets SIGTERM (those that got the terminal's SIGINT
    ignore it) and time to mark its trial FAIL and its run KILLED; a worker that hangs is killed."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def close_interrupted(setup: SweepSetup, exc: BaseException) -> None:
    reason = "terminated" if isinstance(exc, signals.Terminated) else "interrupted"
    recover_dead_trials(setup.study, setup.storage_url, setup.uri, setup.spec.experiment)
    reconcile_runs(setup.study, setup.uri, setup.spec.experiment)
    logger = tracking.RunLogger(setup.uri, setup.parent_run_id)
    logger.tags({tracking.TAG_STATE: "KILLED", tracking.TAG_FAILURE: reason})
    if not trials_in_flight(setup.study):  # other nodes still at work keep the parent RUNNING
        logger.finish("KILLED")


def finish_node(setup: SweepSetup, codes: list[int], write_report: bool) -> SweepOutcome:
    """This node's workers are done. The study is complete when its budget is spent and no
    trial runs anywhere; then (and only then) the parent run ends FINISHED, or FAILED when no
    trial completed, and the report is written and attached to it. Otherwise other nodes are
    still at work and the last of them to finish does this."""
    study, spec = setup.study, setup.spec
    recovered = list(setup.recovered)
    if any(code != 0 for code in codes):
        recovered += recover_dead_trials(study, setup.storage_url, setup.uri, spec.experiment)
    reconcile_runs(study, setup.uri, spec.experiment)
    running = trials_in_flight(study)
    complete = budget_spent(study, spec.n_trials) and not running
    outcome = SweepOutcome(
        spec, setup.storage_url, setup.parent_run_id, recovered, counted_trials(study), codes
    )
    outcome.complete, outcome.running_elsewhere = complete, running
    if complete:
        finished = any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        logger = tracking.RunLogger(setup.uri, setup.parent_run_id)
        if write_report:
            outcome.report_path = write_sweep_report(
                str(spec.path), storage=setup.storage_url, cli_overrides=study.user_attrs.get(STUDY_OVERRIDES)
            )
            tracking.with_retry(
                lambda: logger.client.log_artifacts(
                    setup.parent_run_id, str(outcome.report_path.parent), "report"
                )
            )
            _say(
                f"sweep {spec.name}: report {outcome.report_path} (also on the parent run, artifacts/report)"
            )
        # An earlier Ctrl-C left KILLED tags on the resumed parent; say how the study ended.
        logger.tags({tracking.TAG_STATE: "COMPLETE" if finished else "FAILED", tracking.TAG_FAILURE: ""})
        logger.finish("FINISHED" if finished else "FAILED")
    elif not running:
        tracking.RunLogger(setup.uri, setup.parent_run_id).finish("FAILED")  # stopped short; a rerun resumes
    return outcome


def report_command(spec: SweepSpec, storage_url: str, cli_overrides: list[str] | None) -> str:
    """The `adrlab report` command that reads back exactly this study."""
    parts = [
        "adrlab",
        "report",
        "--sweep",
        spec.path.stem if spec.path.parent.name == "sweeps" else str(spec.path),
    ]
    parts += list(cli_overrides or [])
    if storage_url != default_storage_url(spec):
        parts += ["--storage", shown_storage(storage_url)]
    return " ".join(parts)


def run_sweep(
    spec_ref: str,
    *,
    workers: int | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
    cli_overrides: list[str] | None = None,
    reuse: bool = True,
    write_report: bool = True,
    create_only: bool = False,
) -> SweepOutcome:
    """Run (or resume, or join from another node) a study; `create_only` makes the schema, the
    study and the parent run and returns (a job script's first step before its nodes start)."""
    spec = load_spec(spec_ref, cli_overrides, n_trials)
    storage_url = storage or default_storage_url(spec)
    setup = prepare_sweep(spec, storage_url, cli_overrides)
    command = report_command(spec, storage_url, cli_overrides)
    if create_only:
        outcome = SweepOutcome(
            spec, storage_url, setup.parent_run_id, setup.recovered, counted_trials(setup.study), []
        )
        outcome.report_command = command
        return outcome
    with signals.raised_as_exceptions():
        procs = start_workers(setup, workers, list(cli_overrides or []), reuse)
        try:
            _wait_with_progress(procs, setup.study, spec.n_trials)
        except KeyboardInterrupt as exc:
            stop_workers(procs)
            close_interrupted(setup, exc)
            raise
    codes = [proc.exitcode if proc.exitcode is not None else -1 for proc in procs]
    outcome = finish_node(setup, codes, write_report)
    outcome.report_command = command
    return outcome


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
