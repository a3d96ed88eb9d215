"""Verdicts: a pure function of (an ADR's criteria, the evidence table).

The evidence table is long format, one row per value, with exactly the columns
``run_id, arm, seed, status, kind, metric, x, value`` (docs/INTERFACES.md). `evaluate`
judges every criterion of an ADR against it; `load_evidence` / `save_evidence` keep the
committed ``runs.csv`` exact, so a fresh clone re-derives the very same verdicts.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adrlab.adr import stats
from adrlab.adr.document import Adr, Criterion

PASS = "PASS"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"
NO_DATA = "NO DATA"
VERDICTS: tuple[str, ...] = (PASS, FAIL, INCONCLUSIVE, NO_DATA)

EVIDENCE_COLUMNS: tuple[str, ...] = ("run_id", "arm", "seed", "status", "kind", "metric", "x", "value")
SERIES_KINDS: tuple[str, ...] = ("epoch", "step")
DIVERGED = "DIVERGED"
RUN_STATUSES: tuple[str, ...] = ("FINISHED", DIVERGED)
PLANNED_EPOCHS = "trainer.epochs"  # param row telling how far a diverged run should have gone
# Lifecycle states a verdict does not overturn: evidence says nothing about being superseded.
LIFECYCLE_STATUSES: tuple[str, ...] = ("Superseded", "Deprecated")


@dataclass
class CriterionResult:
    id: str
    claim: str
    role: str
    verdict: str
    estimate: float
    ci_low: float
    ci_high: float
    n: dict[str, int]
    threshold: str
    run_ids: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    note: str = ""
    arm: str = ""
    baseline: str | None = None
    metric: str = ""


@dataclass
class AdrVerdict:
    path: str
    title: str
    scale: str
    human_status: str
    recommended_status: str
    auto_status: bool
    results: list[CriterionResult]
    counts: dict[str, int]

    @property
    def status_differs(self) -> bool:
        return self.recommended_status != self.human_status

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- evidence I/O


def normalize_evidence(evidence: pd.DataFrame) -> pd.DataFrame:
    """The evidence columns with consistent types (x float, seed int where known)."""
    missing = [c for c in EVIDENCE_COLUMNS if c not in evidence.columns]
    if missing:
        raise ValueError(f"evidence table lacks columns {missing}; expected {list(EVIDENCE_COLUMNS)}")
    out = evidence.loc[:, list(EVIDENCE_COLUMNS)].copy()
    for col in ("run_id", "arm", "status", "kind", "metric"):
        out[col] = out[col].astype(str)
    out["x"] = pd.to_numeric(out["x"], errors="coerce").astype(float)
    seeds = pd.to_numeric(out["seed"], errors="coerce")
    out["seed"] = seeds.astype("int64") if seeds.notna().all() else seeds.astype("Int64")
    return out.reset_index(drop=True)


def sort_evidence(evidence: pd.DataFrame) -> pd.DataFrame:
    """The stable row order used on disk: arm, seed, run, kind, metric, x."""
    ev = normalize_evidence(evidence)
    keys = ["arm", "seed", "run_id", "kind", "metric", "x"]
    return ev.sort_values(keys, kind="mergesort", na_position="first").reset_index(drop=True)


def _float_text(value: float) -> str:
    # repr() of a Python float is the shortest text that round-trips exactly.
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def _cell(value: Any) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _float_text(float(value))
    return str(value)


def _x_text(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(int(value)) if float(value).is_integer() else _float_text(float(value))


def save_evidence(evidence: pd.DataFrame, path: str | Path) -> Path:
    """Write the evidence table as CSV (LF, UTF-8) in a stable row order with exact floats."""
    ev = sort_evidence(evidence)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(EVIDENCE_COLUMNS)
        for row in ev.itertuples(index=False):
            writer.writerow(
                [
                    row.run_id,
                    row.arm,
                    _cell(row.seed),
                    row.status,
                    row.kind,
                    row.metric,
                    _x_text(row.x),
                    _cell(row.value),
                ]
            )
    return p


def _parse_value(text: str) -> float | str:
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return text


def load_evidence(path: str | Path) -> pd.DataFrame:
    """Read an evidence CSV written by `save_evidence` (or any CSV with the same columns).

    ``value`` is float where every cell parses as a number; otherwise an object column of
    floats and strings (a param row may hold a word such as an optimizer name).
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    values = [_parse_value(v) for v in raw.get("value", pd.Series([], dtype=str))]
    ev = normalize_evidence(raw.assign(value=pd.Series(values, index=raw.index, dtype=object)))
    if all(isinstance(v, float) for v in values):
        ev["value"] = ev["value"].astype(float)
    return ev


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Run:
    run_id: str
    seed: Any
    status: str
    rows: pd.DataFrame

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED


def _runs_of(ev: pd.DataFrame, arm: str) -> list[_Run]:
    rows = ev[ev["arm"] == arm]
    runs = []
    for run_id, g in rows.groupby("run_id", sort=False):
        seed = g["seed"].iloc[0]
        statuses = set(g["status"])
        # A run is one status; DIVERGED wins if rows disagree (a resumed run that then diverged).
        status = DIVERGED if DIVERGED in statuses else sorted(statuses)[0]
        runs.append(_Run(str(run_id), seed, status, g))
    return sorted(runs, key=lambda r: (_seed_key(r.seed), r.run_id))


def _seed_key(seed: Any) -> tuple[int, Any]:
    return (1, 0) if seed is None or seed is pd.NA else (0, int(seed))


def _param_key(value: Any) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _series(run: _Run, metric: str, mode: str, grid: np.ndarray) -> stats.RunSeries:
    rows = run.rows[(run.rows["metric"] == metric) & run.rows["kind"].isin(SERIES_KINDS)]
    values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=float)
    return stats.RunSeries.from_points(
        rows["x"].to_numpy(dtype=float), values, mode=mode, diverged=run.diverged, grid=grid
    )


def _with_planned_epochs(grid: np.ndarray, run: _Run) -> np.ndarray:
    """Extend the grid with the run's planned epochs (param trainer.epochs), when logged."""
    planned = run.rows.loc[(run.rows["kind"] == "param") & (run.rows["metric"] == PLANNED_EPOCHS), "value"]
    epochs = pd.to_numeric(planned, errors="coerce").dropna()
    if epochs.empty or not 0 < epochs.iloc[-1] < 1e6:
        return grid
    return np.union1d(grid, np.arange(1, int(epochs.iloc[-1]) + 1, dtype=float))


def _label(run: _Run, arm: str) -> str:
    return f"{run.run_id[:8]} ({arm} seed {run.seed})"


def decide(compare: str, threshold: float, low: float, high: float) -> str:
    """PASS when the whole interval satisfies ``value <compare> threshold``, FAIL when the whole
    interval violates it, INCONCLUSIVE when it straddles (or is undefined)."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if compare == "<":
        ok, bad = high < threshold, low >= threshold
    elif compare == "<=":
        ok, bad = high <= threshold, low > threshold
    elif compare == ">":
        ok, bad = low > threshold, high <= threshold
    elif compare == ">=":
        ok, bad = low >= threshold, high < threshold
    else:
        raise ValueError(f"unknown comparison {compare!r}")
    return PASS if ok else FAIL if bad else INCONCLUSIVE


def evaluate_criterion(
    adr: Adr,
    criterion: Criterion,
    evidence: pd.DataFrame,
    scale: str = "smoke",
    *,
    n_resamples: int = stats.N_RESAMPLES,
) -> CriterionResult:
    """Judge one criterion; ``evidence`` must already be normalized."""
    c = criterion
    result = CriterionResult(
        id=c.id,
        claim=c.claim,
        role=c.role,
        verdict=NO_DATA,
        estimate=math.nan,
        ci_low=math.nan,
        ci_high=math.nan,
        n={arm: 0 for arm in c.arms},
        threshold=c.describe_threshold(),
        arm=c.arm,
        baseline=c.baseline,
        metric=c.metric,
    )
    notes: list[str] = []
    runs = {arm: _runs_of(evidence, arm) for arm in c.arms}
    for arm in c.arms:
        # A run still going (or killed) has a partial series that would read as finished.
        skipped = [r for r in runs[arm] if r.status not in RUN_STATUSES]
        notes.extend(f"{_label(r, arm)} skipped: status {r.status}" for r in skipped)
        runs[arm] = [r for r in runs[arm] if r.status in RUN_STATUSES]

    exp = adr.experiments.get(scale)
    for arm in c.arms:
        if exp is None:
            continue
        if arm not in exp.arms:
            notes.append(f"arm {arm} is not declared for scale {scale}")
            continue
        present = {int(r.seed) for r in runs[arm] if r.seed is not None and r.seed is not pd.NA}
        result.missing.extend(f"{arm} seed {s}" for s in exp.seeds if s not in present)
    if exp is None:
        notes.append(f"no experiments declared for scale {scale}")

    empty = [arm for arm in c.arms if not runs[arm]]
    if empty:
        result.note = "; ".join([f"no runs of {', '.join(empty)}", *notes])
        return result

    # The points a diverged run should have reached: every x any run of this evidence logged
    # for the metric (all arms share one scale), plus 1..trainer.epochs for per-epoch metrics.
    grid = evidence.loc[(evidence["metric"] == c.metric) & evidence["kind"].isin(SERIES_KINDS), "x"]
    grid = np.unique(grid.dropna().to_numpy(dtype=float))
    epoch_metric = bool(((evidence["metric"] == c.metric) & (evidence["kind"] == "epoch")).any())
    inner = c.statistic.of if c.statistic.name == "spread" else c.statistic
    assert inner is not None

    sides: list[stats.Side] = []
    smallest: tuple[int, str] | None = None  # (runs, where) of the thinnest group
    for arm in c.arms:
        values: list[float] = []
        used: list[_Run] = []
        params: list[float | str] = []
        for run in runs[arm]:
            run_grid = _with_planned_epochs(grid, run) if epoch_metric and run.diverged else grid
            value = stats.run_statistic(_series(run, c.metric, c.mode, run_grid), inner)
            if math.isnan(value):
                notes.append(f"{_label(run, arm)} has no {c.metric} for {inner.describe()}")
                continue
            if c.statistic.name == "spread":
                over = c.statistic.params["over"]
                prow = run.rows[(run.rows["kind"] == "param") & (run.rows["metric"] == over)]
                if prow.empty:
                    notes.append(f"{_label(run, arm)} has no param {over}")
                    continue
                params.append(_param_key(prow["value"].iloc[-1]))
            values.append(value)
            used.append(run)
        result.n[arm] = len(used)
        result.run_ids.extend(r.run_id for r in used)
        if not used:
            result.note = "; ".join([f"no usable runs of {arm}", *notes])
            return result
        if c.statistic.name == "spread":
            keys = sorted(set(params), key=lambda k: (isinstance(k, str), k))
            groups = [[v for v, k in zip(values, params) if k == key] for key in keys]
            for key, g in zip(keys, groups):
                if smallest is None or len(g) < smallest[0]:
                    smallest = (len(g), f"{arm} at {c.statistic.params['over']}={key}")
            if len(keys) < 2:
                notes.append(f"{arm} has only one value of {c.statistic.params['over']}; spread needs two")
                smallest = (0, smallest[1] if smallest else arm)
            sides.append(stats.Side.spread(groups, c.statistic.params.get("kind", "ratio")))
        else:
            if smallest is None or len(used) < smallest[0]:
                smallest = (len(used), arm)
            sides.append(stats.Side.plain(values))

    interval = stats.bootstrap_interval(
        sides[0], sides[1] if len(sides) > 1 else None, c.relation, n_resamples=n_resamples
    )
    result.estimate, result.ci_low, result.ci_high = interval.estimate, interval.low, interval.high
    assert smallest is not None
    if smallest[0] < c.min_seeds:
        result.verdict = INCONCLUSIVE
        if smallest[0] > 0:
            notes.insert(0, f"fewer than min_seeds={c.min_seeds} runs for {smallest[1]} (n={smallest[0]})")
    elif math.isnan(interval.estimate):
        result.verdict = INCONCLUSIVE
        notes.insert(0, "the statistic is undefined (e.g. both arms diverged)")
    else:
        result.verdict = decide(c.compare, c.threshold, interval.low, interval.high)
        if result.verdict == INCONCLUSIVE:
            notes.insert(0, "the 95% interval straddles the threshold")
    diverged = [r for arm in c.arms for r in runs[arm] if r.diverged and r.run_id in result.run_ids]
    if diverged:
        names = ", ".join(r.run_id[:8] for r in diverged)
        notes.append(f"diverged: {names} (points after the divergence count as worst)")
    result.note = "; ".join(notes)
    return result


def recommend_status(human_status: str, results: list[CriterionResult]) -> str:
    """Accepted if every primary criterion passes, Rejected if any fails, else unchanged.

    Superseded and Deprecated are lifecycle decisions that evidence does not overturn.
    """
    if human_status in LIFECYCLE_STATUSES:
        return human_status
    primary = [r.verdict for r in results if r.role == "primary"]
    if primary and FAIL in primary:
        return "Rejected"
    if primary and all(v == PASS for v in primary):
        return "Accepted"
    return human_status


def evaluate(
    adr: Adr, evidence: pd.DataFrame, scale: str = "smoke", *, n_resamples: int = stats.N_RESAMPLES
) -> AdrVerdict:
    """Every criterion of ``adr`` judged from ``evidence`` (runs of ``scale``)."""
    ev = normalize_evidence(evidence)
    results = [evaluate_criterion(adr, c, ev, scale, n_resamples=n_resamples) for c in adr.criteria]
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    return AdrVerdict(
        path=str(adr.path),
        title=adr.title,
        scale=scale,
        human_status=adr.status,
        recommended_status=recommend_status(adr.status, results),
        auto_status=adr.auto_status,
        results=results,
        counts=counts,
    )
