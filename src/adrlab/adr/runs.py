"""ADR experiments → runs (through the sweep workers) and runs → the evidence table."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from adrlab import tracking
from adrlab.adr.document import Adr, AdrError, Arm, Experiment, parse_adr
from adrlab.adr.metrics import EPOCH_METRICS, NUMERIC_PARAMS
from adrlab.adr.per_run import needed_params
from adrlab.adr.verdict import EVIDENCE_COLUMNS, PLANNED_EPOCHS, UNKNOWN
from adrlab.adr.workspace import activate
from adrlab.config import compose, project_root

TAG_ADR = tracking.TAG_ADR
TAG_ADR_SCALE = tracking.TAG_ADR_SCALE
# Per-step metrics every ADR report draws (grad norm/energy traces, memory profile, weight RMS).
REPORT_STEP_METRICS = (
    "grad_norm",
    "energy_mean",
    "energy_max",
    "lr",
    "wd",
    "decay",
    "weight_rms",
    "update_rms",
    "train_loss",
)
# Numeric params the evidence carries only where a criterion needs one (per_run.needed_params):
# the run's sizes, which the committed runs*.csv snapshots were exported without.
PARAMS_ON_DEMAND = frozenset(
    {"data.seq_len", "trainer.batch_size", "trainer.epochs", "derived.n_params", "derived.n_train_tokens"}
)
# Params every run's evidence carries: the choices that name its regime, then every number it logs
# (metrics.NUMERIC_PARAMS, the one list of those) but the on-demand ones.
PARAMS = (
    "optimizer.name",
    "regularizer.name",
    "lr_schedule.name",
    "wd_schedule.name",
    "derived.decay_units",
    *(p for p in NUMERIC_PARAMS if p not in PARAMS_ON_DEMAND),
)


def adr_dir() -> Path:
    return project_root() / "adr"


def find_adr(ref: str) -> Path:
    """`0002`, `2`, `ADR-0002` or a path → the ADR file."""
    path = Path(ref)
    if path.suffix == ".md" and path.is_file():
        return path.resolve()
    digits = "".join(ch for ch in ref if ch.isdigit())
    if digits:
        matches = sorted(adr_dir().glob(f"{int(digits):04d}-*.md"))
        if matches:
            return matches[0]
    known = ", ".join(p.stem for p in all_adr_paths()) or "(none)"
    raise AdrError(ref, None, f"no ADR {ref!r} in adr/; known: {known}")


def all_adr_paths() -> list[Path]:
    return sorted(p for p in adr_dir().glob("[0-9][0-9][0-9][0-9]-*.md"))


def experiment_name(adr: Adr) -> str:
    return f"adr-{adr.number}"


def experiment_at(adr: Adr, scale: str) -> Experiment:
    if scale not in adr.experiments:
        raise AdrError(
            adr.path, None, f"no experiments at scale {scale!r}; declared: {', '.join(adr.experiments)}"
        )
    return adr.experiments[scale]


EMPTY_RUNS = ["run_id", "arm", "seed", "state", "start_time"]


def _usable(runs: pd.DataFrame, arm: str, identity: list[str]) -> pd.DataFrame:
    """Complete or diverged runs of one arm, the newest per identity (seed, and the swept
    parameters for a sweep arm): a point trained twice counts once."""
    state_col = f"tags.{tracking.TAG_STATE}"
    if runs.empty or state_col not in runs:
        return pd.DataFrame(columns=EMPTY_RUNS)
    runs = runs[runs[state_col].isin(["COMPLETE", "DIVERGED"])].copy()
    runs["arm"] = arm
    runs["seed"] = runs[f"tags.{tracking.TAG_SEED}"].astype(int)
    runs["state"] = runs[state_col]
    columns = ["seed", *[c for c in identity if c in runs]]
    return runs.sort_values("start_time", ascending=False).drop_duplicates(columns)


def stored_runs(adr: Adr, scale: str, uri: str) -> pd.DataFrame:
    """Finished (or diverged) runs of the ADR's arms at this scale.

    Override arms: the newest run per seed. Sweep arms: the newest run per (swept values, seed)
    of the referenced study. Columns: run_id, arm, seed, state, start_time, params.*, tags.*.
    """
    from adrlab.sweep.spec import load_spec

    exp = experiment_at(adr, scale)
    direct = tracking.search_runs(
        uri,
        [experiment_name(adr)],
        f"tags.`{TAG_ADR}` = '{adr.number}' and tags.`{TAG_ADR_SCALE}` = '{scale}'",
    )
    frames = []
    for arm in exp.arms.values():
        if arm.sweep:
            spec = load_spec(arm.sweep, list(arm.overrides))
            in_sweep = f"tags.`{tracking.TAG_SWEEP}` = '{spec.name}'"
            runs = tracking.search_runs(uri, [spec.experiment], in_sweep)
            if f"tags.{tracking.TAG_SWEEP_PARENT}" in runs:
                runs = runs[runs[f"tags.{tracking.TAG_SWEEP_PARENT}"].isna()]
            frames.append(_usable(runs, arm.name, [f"params.{k}" for k in spec.keys]))
        elif not direct.empty:
            frames.append(_usable(direct[direct[f"tags.{tracking.TAG_ARM}"] == arm.name], arm.name, []))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=EMPTY_RUNS)
    runs = pd.concat(frames, ignore_index=True)
    return runs.sort_values(["arm", "seed", "start_time"]).reset_index(drop=True)


def arm_jobs(exp: Experiment) -> dict[str, tuple[str, int, list[str]]]:
    """Every arm × seed run of the override arms: job name → (arm, seed, overrides)."""
    return {
        f"{arm.name}-s{seed}": (arm.name, seed, arm_job(arm, seed))
        for arm in exp.arms.values()
        if not arm.sweep
        for seed in exp.seeds
    }


def arm_job(arm: Arm, seed: int) -> list[str]:
    """An override arm's run at one seed; it is composed after the scale's overrides."""
    return [*arm.overrides, f"seed={seed}", f"arm={arm.name}"]


def missing_jobs(adr: Adr, scale: str, uri: str) -> dict[str, list[str]]:
    """The arm × seed runs of override arms that the store does not hold yet."""
    have = stored_runs(adr, scale, uri)
    done = set(zip(have["arm"], have["seed"])) if not have.empty else set()
    jobs = arm_jobs(experiment_at(adr, scale)).items()
    return {name: overrides for name, (arm, seed, overrides) in jobs if (arm, seed) not in done}


def arm_run_overrides(adr: Adr, scale: str) -> dict[str, list[list[str]]]:
    """Per arm, the override lists its runs at `scale` are composed from (first seed; one list
    per enqueued point of a sweep arm), built as `run_experiments` builds them: override arms
    after the scale's overrides, sweep arms from their spec and the arm's own overrides only."""
    from adrlab.sweep.spec import load_spec

    exp = experiment_at(adr, scale)
    out: dict[str, list[list[str]]] = {}
    for arm in exp.arms.values():
        if not arm.sweep:
            out[arm.name] = [[*exp.overrides, *arm_job(arm, exp.seeds[0])]]
            continue
        spec = load_spec(arm.sweep, list(arm.overrides))
        seed = [] if spec.seeds[0] is None else [f"seed={spec.seeds[0]}"]
        out[arm.name] = [[*spec.overrides_for(point), *seed] for point in (spec.enqueue or [{}])]
    return out


def write_job_spec(adr: Adr, scale: str, cfg) -> Path:
    """The job study's spec: every arm × seed of the override arms, named by their content, so
    nodes that run the same ADR against one storage join one study and each job trains once
    (jobs already in the store are served by the run cache)."""
    exp = experiment_at(adr, scale)
    jobs = {name: overrides for name, (_, _, overrides) in arm_jobs(exp).items()}
    digest = hashlib.sha256(yaml.safe_dump(jobs, sort_keys=True).encode()).hexdigest()[:8]
    name = f"adr-{adr.number}-{scale}-{digest}"
    spec = {
        "name": name,
        "description": f"Runs for {adr.title} at scale {scale}",
        "base": {"overrides": list(exp.overrides)},
        "jobs": jobs,
        "objective": {"metric": "val_ppl", "statistic": "best", "direction": "minimize"},
        "tracking": {"experiment": experiment_name(adr)},
        "tags": {TAG_ADR: adr.number, TAG_ADR_SCALE: scale, tracking.TAG_ADR_TITLE: adr.title},
    }
    path = tracking.runs_dir(cfg) / "adr" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def run_experiments(
    ref: str, scale: str = "smoke", workers: int | None = None, storage: str | None = None
) -> dict[str, object]:
    """Run what the ADR still needs at this scale: missing override-arm runs as one job study
    on the sweep workers (with the run cache), and every referenced sweep (which resumes).
    storage: the Optuna storage of those studies (an RDB URL lets several nodes share them)."""
    from adrlab.sweep.runner import run_sweep

    adr = parse_adr(find_adr(ref))
    activate(adr)  # its own config and module folders, for this process and the workers
    exp = experiment_at(adr, scale)
    cfg = compose(list(exp.overrides))
    uri = tracking.tracking_uri(cfg)
    jobs = missing_jobs(adr, scale, uri)
    ran: dict[str, object] = {"jobs": sorted(jobs), "sweeps": []}
    if jobs:
        path = write_job_spec(adr, scale, cfg)
        print(
            f"adrlab: ADR-{adr.number} {scale}: {len(jobs)} run(s) to train: {', '.join(sorted(jobs))}",
            file=sys.stderr,
        )
        run_sweep(str(path), workers=workers, storage=storage, write_report=False)
    else:
        print(
            f"adrlab: ADR-{adr.number} {scale}: every arm × seed run is already in the store", file=sys.stderr
        )
    for arm in exp.arms.values():
        if arm.sweep:
            run_sweep(
                arm.sweep,
                workers=workers,
                storage=storage,
                cli_overrides=list(arm.overrides),
                write_report=True,
            )
            ran["sweeps"].append(arm.sweep)  # type: ignore[union-attr]
    return ran


def collect_evidence(adr: Adr, scale: str, uri: str) -> pd.DataFrame:
    """The evidence table (docs/INTERFACES.md) of every stored run of the ADR's arms at
    ``scale``, each row with the scale, the run's commit (``-dirty`` when the tree was) and
    its config hash."""
    runs = stored_runs(adr, scale, uri)
    if runs.empty:
        return pd.DataFrame([], columns=list(EVIDENCE_COLUMNS))
    wanted_params = set(PARAMS) | needed_params(adr.criteria)  # + swept, relative_to, token clock
    # A criterion's metric is adrlab's own or one an arm's `_target_` optimizer declares (the
    # parser accepted nothing else): every one that is not per epoch is per step.
    step_metrics = set(REPORT_STEP_METRICS) | {
        c.metric for c in adr.criteria if c.metric not in EPOCH_METRICS
    }
    # One bulk read for every run (not one call per run and metric): see tracking.metric_histories.
    histories = tracking.metric_histories(uri, runs["run_id"], [*EPOCH_METRICS, *sorted(step_metrics)])
    info = _run_info(runs, scale)
    parts = [_history_rows(histories, info), *_param_rows(runs, info, sorted(wanted_params))]
    # How far a diverged run was meant to go: a criterion reads it as worst up to that end.
    diverged = (info["status"] == "DIVERGED").to_numpy()
    if diverged.any() and PLANNED_EPOCHS not in wanted_params:
        parts.append(_param_key_rows(runs[diverged], info[diverged], PLANNED_EPOCHS))
    frame = pd.concat(parts, ignore_index=True).loc[:, list(EVIDENCE_COLUMNS)]
    frame = frame.astype({"seed": "int64", "x": float, "value": float})
    return frame.sort_values(["arm", "seed", "run_id", "kind", "metric", "x"], kind="stable").reset_index(
        drop=True
    )


def _run_info(runs: pd.DataFrame, scale: str) -> pd.DataFrame:
    """run_id -> the columns every row of a run shares (arm, seed, status, provenance)."""
    records = [r for _, r in runs.iterrows()]
    return pd.DataFrame(
        {
            "arm": [r["arm"] for r in records],
            "seed": [int(r["seed"]) for r in records],
            "status": ["FINISHED" if r["state"] == "COMPLETE" else "DIVERGED" for r in records],
            "scale": scale,
            "git_sha": [_tag(r, tracking.TAG_GIT_SHA) for r in records],
            "config_hash": [_tag(r, tracking.TAG_CONFIG_HASH) for r in records],
        },
        index=pd.Index([r["run_id"] for r in records], name="run_id"),
    )


def _history_rows(histories: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    """One evidence row per logged metric point of a run in ``info`` (history order kept).

    Text columns are built by taking from their few distinct values (a run's columns by its
    position in ``info``, metric names by their codes): converting 800k Python strings into
    pandas' string columns one by one cost more than a second at the read-back bench's size."""
    at = info.index.get_indexer(histories["run_id"].to_numpy())
    keep = at >= 0
    rows, at = histories[keep], at[keep]
    metric_codes, metric_names = pd.factorize(rows["metric"].to_numpy())
    is_epoch = pd.Index(metric_names).isin(EPOCH_METRICS)
    kind_codes = np.where(is_epoch, 0, 1)[metric_codes] if len(metric_names) else metric_codes
    return pd.DataFrame(
        {
            "run_id": _taken(info.index.to_numpy(), at),
            **{col: _taken(info[col].to_numpy(), at) for col in info.columns},
            "kind": _taken(np.array(["epoch", "step"], dtype=object), kind_codes),
            "metric": _taken(metric_names, metric_codes),
            "x": rows["step"].to_numpy(dtype=float),
            "value": rows["value"].to_numpy(dtype=float),
        }
    )


def _taken(values: np.ndarray, positions: np.ndarray) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """``values[positions]`` in the dtype pandas gives such a column (its string dtype for
    text), converting only the distinct values."""
    return pd.Series(values).array.take(positions)


def _param_rows(runs: pd.DataFrame, info: pd.DataFrame, keys: list[str]) -> list[pd.DataFrame]:
    """Per run: each wanted param that reads as a number, then its start time (ms)."""
    out = [_param_key_rows(runs, info, key) for key in keys]
    starts = [float(t.timestamp() * 1000) for t in runs["start_time"]]
    out.append(_rows_of(info, "param", "run.start_time", starts))
    return out


def _param_key_rows(runs: pd.DataFrame, info: pd.DataFrame, key: str) -> pd.DataFrame:
    """A row per run whose param ``key`` reads as a number."""
    column = f"params.{key}"
    raw = runs[column].tolist() if column in runs.columns else [None] * len(runs)
    values = [_as_float(v) for v in raw]
    keep = [v is not None for v in values]
    return _rows_of(info[keep], "param", key, [v for v in values if v is not None])


def _rows_of(info: pd.DataFrame, kind: str, metric: str, values: list[float]) -> pd.DataFrame:
    frame = info.reset_index().assign(kind=kind, metric=metric, x=math.nan)
    return frame.assign(value=np.asarray(values, dtype=float))


def _as_float(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _tag(run: pd.Series, tag: str) -> str:
    value = run.get(f"tags.{tag}")
    return str(value) if isinstance(value, str) and value else UNKNOWN


def run_dates(adr: Adr, scale: str, uri: str) -> dict[str, str]:
    runs = stored_runs(adr, scale, uri)
    if runs.empty:
        return {}
    return {str(r["run_id"]): pd.Timestamp(r["start_time"]).strftime("%Y-%m-%d") for _, r in runs.iterrows()}
