"""Verdicts: a pure function of (an ADR's criteria, the evidence table).

The evidence table is long format, one row per value, with exactly the columns
``run_id, arm, seed, status, kind, metric, x, value`` (docs/INTERFACES.md). `evaluate`
judges every criterion of an ADR against it; `load_evidence` / `save_evidence` keep the
committed ``runs.csv`` exact, so a fresh clone re-derives the very same verdicts.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from adrlab.adr import guards, per_run, stats
from adrlab.adr.document import Adr, Criterion

PASS = "PASS"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"
NO_DATA = "NO DATA"
INVALID = "INVALID"  # a validity guard failed: the runs cannot speak to the claim
VERDICTS: tuple[str, ...] = (PASS, FAIL, INCONCLUSIVE, INVALID, NO_DATA)

CORE_COLUMNS: tuple[str, ...] = ("run_id", "arm", "seed", "status", "kind", "metric", "x", "value")
# Scale and provenance: absent from snapshots written before they existed (scale smoke,
# commit and config hash unknown), present in every new export.
PROVENANCE_COLUMNS: tuple[str, ...] = ("scale", "git_sha", "config_hash")
EVIDENCE_COLUMNS: tuple[str, ...] = (*CORE_COLUMNS, *PROVENANCE_COLUMNS)
UNKNOWN = "unknown"
LEGACY_SCALE = "smoke"
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
    method: str = ""
    seeds_needed: int | None = None
    guards: list[str] = field(default_factory=list)  # validity findings (INVALID or warnings)
    threshold_value: float = math.nan


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
    rule: str = ""  # which rule produced the recommended status
    commits: dict[str, int] = field(default_factory=dict)  # git sha -> runs of the evidence

    @property
    def status_differs(self) -> bool:
        return self.recommended_status != self.human_status

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- evidence I/O


def normalize_evidence(evidence: pd.DataFrame, scale: str = LEGACY_SCALE) -> pd.DataFrame:
    """The evidence columns with consistent types (x float, seed int where known).

    A table without the provenance columns (written before they existed) gets ``scale``
    (default smoke) and ``unknown`` commit and config hash."""
    missing = [c for c in CORE_COLUMNS if c not in evidence.columns]
    if missing:
        raise ValueError(f"evidence table lacks columns {missing}; expected {list(EVIDENCE_COLUMNS)}")
    out = evidence.copy()
    defaults = {"scale": scale, "git_sha": UNKNOWN, "config_hash": UNKNOWN}
    for col, default in defaults.items():
        if col not in out.columns:
            out[col] = default
        out[col] = out[col].where(out[col].notna() & (out[col].astype(str) != ""), default)
    out = out.loc[:, list(EVIDENCE_COLUMNS)]
    for col in ("run_id", "arm", "status", "kind", "metric", *PROVENANCE_COLUMNS):
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
    # repr() of a Python float is the shortest text that round-trips exactly ("nan", "inf" and
    # "-inf" included).
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


def _csv_text(value: Any) -> str:
    """The text csv.writer writes for a cell: None empty, a float its repr, anything else str()
    (a missing value of a str column is a float NaN, written ``nan``)."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _distinct_text(values: pd.Series, text: Callable[[Any], str]) -> list[str]:
    """`text` of each value of a normalized column, formatted once per distinct value (ids,
    names, seeds and steps repeat across hundreds of thousands of rows). A missing value is one
    of the distinct values, so ``text`` decides its cell. 0.0 and -0.0 may share one: `_x_text`
    writes "0" for both."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    cells = np.array([text(v) for v in uniques], dtype=object)
    return cells[codes].tolist()


def _text_columns(ev: pd.DataFrame) -> list[list[str]]:
    """Each column of a normalized evidence table as the cells `save_evidence` writes, column by
    column (formatting 900k rows one row tuple at a time took seconds)."""
    strings = ("run_id", "arm", "status", "kind", "metric", *PROVENANCE_COLUMNS)
    text = {col: _distinct_text(ev[col], _csv_text) for col in strings}
    text["seed"] = _distinct_text(ev["seed"], _cell)
    text["x"] = _distinct_text(ev["x"], _x_text)
    values = ev["value"].tolist()
    if ev["value"].dtype == np.float64:  # every value a Python float: its repr, without the checks
        text["value"] = list(map(repr, values))
    else:
        text["value"] = [repr(v) if type(v) is float else _cell(v) for v in values]
    return [text[col] for col in EVIDENCE_COLUMNS]


# Characters that make csv.writer's default QUOTE_MINIMAL quote a cell (delimiter, quote char,
# line ends); a cell without any is written as it is.
_QUOTE_TRIGGERS: tuple[str, ...] = (",", '"', "\n", "\r")
_CHUNK_ROWS = 65536  # rows joined per write: bounds the text held at once


def _needs_quoting(cells: list[str]) -> bool:
    joined = "".join(cells)  # one scan per trigger over the column, not one check per cell
    return any(ch in joined for ch in _QUOTE_TRIGGERS)


def _write_csv_rows(fh: TextIO, header: Sequence[str], columns: list[list[str]]) -> None:
    """Write ``header`` and the rows of ``columns`` (cells as text, column by column) exactly as
    ``csv.writer(fh, lineterminator="\n")`` would. When no cell needs quoting the rows are joined
    directly: csv.writer's per-cell work took half of `save_evidence` on 800k rows."""
    if len(header) < 2 or _needs_quoting(list(header)) or any(_needs_quoting(col) for col in columns):
        # csv.writer quotes a lone empty cell, and whatever holds a trigger: leave it all to it.
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(zip(*columns, strict=True))
        return
    fh.write(",".join(header) + "\n")
    rows = zip(*columns, strict=True)
    while chunk := [",".join(row) + "\n" for row in islice(rows, _CHUNK_ROWS)]:
        fh.write("".join(chunk))


def save_evidence(evidence: pd.DataFrame, path: str | Path) -> Path:
    """Write the evidence table as CSV (LF, UTF-8) in a stable row order with exact floats."""
    ev = sort_evidence(evidence)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8", newline="") as fh:
        _write_csv_rows(fh, EVIDENCE_COLUMNS, _text_columns(ev))
    return p


def _parse_value(text: str) -> float | str:
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return text


def load_evidence(path: str | Path, scale: str = LEGACY_SCALE) -> pd.DataFrame:
    """Read an evidence CSV written by `save_evidence` (or any CSV with the same columns);
    an old snapshot without a scale column is taken as ``scale`` (smoke).

    ``value`` is float where every cell parses as a number; otherwise an object column of
    floats and strings (a param row may hold a word such as an optimizer name).
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    values = [_parse_value(v) for v in raw.get("value", pd.Series([], dtype=str))]
    ev = normalize_evidence(raw.assign(value=pd.Series(values, index=raw.index, dtype=object)), scale)
    if all(isinstance(v, float) for v in values):
        ev["value"] = ev["value"].astype(float)
    return ev


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Run:
    run_id: str
    seed: Any
    status: str
    arm_rows: pd.DataFrame  # every row of the run's arm; the run's own are at `positions`
    positions: np.ndarray
    git_sha: str = UNKNOWN

    @property
    def rows(self) -> pd.DataFrame:
        """The run's rows (sliced on demand: most runs never need them as a frame)."""
        return self.arm_rows.iloc[self.positions]

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED


def _runs_of(rows: pd.DataFrame) -> list[_Run]:
    """The runs among ``rows`` (one arm's), by seed then run id."""
    groups = rows.groupby("run_id", sort=False).indices
    first = np.array([at[0] for at in groups.values()], dtype=np.intp)
    # Seed and commit from each run's first row, taken at once (a pandas lookup per run, or
    # turning whole string columns into objects, cost more than the rest); statuses as codes.
    seeds = rows["seed"].array.take(first)  # indexed below: the scalars .iloc would give
    shas = rows["git_sha"].take(first).tolist()
    codes, names = pd.factorize(rows["status"], use_na_sentinel=False)
    status_names = list(names)
    runs = []
    for i, (run_id, at) in enumerate(groups.items()):
        statuses = {status_names[c] for c in np.unique(codes[at])}
        # A run is one status; DIVERGED wins if rows disagree (a resumed run that then diverged).
        status = DIVERGED if DIVERGED in statuses else sorted(statuses)[0]
        runs.append(_Run(str(run_id), seeds[i], status, rows, at, str(shas[i])))
    return sorted(runs, key=lambda r: (_seed_key(r.seed), r.run_id))


class _Evidence:
    """A normalized evidence table of one scale, split by arm once. Every criterion (and Holm's
    second look at the primaries) reads the same arms; filtering all rows by arm for each use,
    and building each arm's runs again, took most of `evaluate` on an 800k-row table."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self._positions: dict[Any, np.ndarray] = table.groupby("arm", sort=False).indices
        self._rows: dict[str, pd.DataFrame] = {}
        self._runs: dict[str, list[_Run]] = {}
        self._grids: dict[str, tuple[np.ndarray, bool]] = {}
        self._guard_rows: pd.DataFrame | None = None

    def rows(self, arm: str) -> pd.DataFrame:
        """The rows of ``arm``: ``table[table["arm"] == arm]`` (same rows, order and index)."""
        if arm not in self._rows:
            at = self._positions.get(arm, np.empty(0, dtype=np.intp))
            contiguous = len(at) > 0 and at[-1] - at[0] + 1 == len(at)
            # A table sorted by arm (as collected) holds each arm in one block: a slice, not a copy.
            self._rows[arm] = self.table.iloc[at[0] : at[-1] + 1] if contiguous else self.table.iloc[at]
        return self._rows[arm]

    def runs(self, arm: str) -> list[_Run]:
        """Every run of ``arm`` (a shared list: copy before changing it)."""
        if arm not in self._runs:
            self._runs[arm] = _runs_of(self.rows(arm))
        return self._runs[arm]

    def grid(self, metric: str) -> tuple[np.ndarray, bool]:
        if metric not in self._grids:
            self._grids[metric] = _metric_grid(metric, self.table)
        return self._grids[metric]

    @property
    def guard_rows(self) -> pd.DataFrame:
        """The rows `guards.check` reads (it finds the same on them as on the whole table)."""
        if self._guard_rows is None:
            self._guard_rows = guards.rows_read(self.table)
        return self._guard_rows


def _seed_key(seed: Any) -> tuple[int, Any]:
    return (1, 0) if seed is None or seed is pd.NA else (0, int(seed))


def _param_key(value: Any) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _series_points(arm_rows: pd.DataFrame, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run_id -> (x, value) of ``metric``'s series rows among one arm's rows, in evidence order:
    the rows are filtered once per arm and metric, not once per run."""
    rows = arm_rows[(arm_rows["metric"] == metric) & arm_rows["kind"].isin(SERIES_KINDS)]
    x = rows["x"].to_numpy(dtype=float)
    values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=float)
    groups = rows.groupby("run_id", sort=False).indices
    return {str(run_id): (x[i], values[i]) for run_id, i in groups.items()}


def _last_param(arm_rows: pd.DataFrame, key: str) -> dict[str, Any]:
    """run_id -> the last logged value of param ``key`` among one arm's rows."""
    rows = arm_rows[(arm_rows["kind"] == "param") & (arm_rows["metric"] == key)]
    return dict(zip(rows["run_id"].tolist(), rows["value"].tolist()))  # later rows overwrite


def _series(points: tuple[np.ndarray, np.ndarray] | None, run: _Run, mode: str, grid: np.ndarray):
    x, values = points if points is not None else (np.empty(0), np.empty(0))
    return stats.RunSeries.from_points(x, values, mode=mode, diverged=run.diverged, grid=grid)


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


@dataclass
class _Value:
    """One usable run of an arm: its per-run statistic and, for a spread, its swept value."""

    run: _Run
    value: float
    param: float | str | None = None


def _new_result(c: Criterion) -> CriterionResult:
    return CriterionResult(
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
        threshold_value=c.threshold,
    )


def _finished_runs(c: Criterion, evidence: _Evidence, notes: list[str]) -> dict[str, list[_Run]]:
    """FINISHED or DIVERGED runs per arm; a run still going (or killed) has a partial series
    that would read as finished, so it is skipped and named."""
    runs = {arm: evidence.runs(arm) for arm in c.arms}
    for arm in c.arms:
        notes.extend(
            f"{_label(r, arm)} skipped: status {r.status}" for r in runs[arm] if r.status not in RUN_STATUSES
        )
        runs[arm] = [r for r in runs[arm] if r.status in RUN_STATUSES]
    return runs


def _missing_runs(
    adr: Adr, c: Criterion, runs: dict[str, list[_Run]], scale: str, notes: list[str]
) -> list[str]:
    """Declared arm × seed pairs of this scale without a run."""
    exp = adr.experiments.get(scale)
    if exp is None:
        notes.append(f"no experiments declared for scale {scale}")
        return []
    missing = []
    for arm in c.arms:
        if arm not in exp.arms:
            notes.append(f"arm {arm} is not declared for scale {scale}")
            continue
        present = {int(r.seed) for r in runs[arm] if r.seed is not None and r.seed is not pd.NA}
        missing.extend(f"{arm} seed {s}" for s in exp.seeds if s not in present)
    return missing


def _metric_grid(metric: str, evidence: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """The points a diverged run should have reached: every x any run of this evidence logged
    for the metric (one scale), and whether the metric is per epoch (then 1..trainer.epochs)."""
    rows = evidence[(evidence["metric"] == metric) & evidence["kind"].isin(SERIES_KINDS)]
    grid = np.unique(rows["x"].dropna().to_numpy(dtype=float))
    return grid, bool((rows["kind"] == "epoch").any())


def _arm_values(
    c: Criterion, arm: str, runs: list[_Run], evidence: _Evidence, notes: list[str]
) -> list[_Value]:
    """Per-run statistic of every usable run of ``arm``; unusable runs are named in ``notes``."""
    grid, epoch_metric = evidence.grid(c.metric)
    inner = per_run.inner_statistic(c.statistic)
    rows = evidence.rows(arm)  # per_run filters by arm itself: its rows alone give the same
    out, points = [], _series_points(rows, c.metric)
    swept = _last_param(rows, c.statistic.params["over"]) if c.statistic.name == "spread" else {}
    ids = [run.run_id for run in runs]
    axis = str(inner.params.get("axis", "")) if inner.name == "time_to_target" else ""
    clocks = per_run.clocks(rows, arm, axis, epoch_metric, ids)
    divisors = per_run.divisors(rows, arm, inner.relative_to, ids) if inner.relative_to else {}
    for run in runs:
        run_grid = _with_planned_epochs(grid, run) if epoch_metric and run.diverged else grid
        series = _series(points.get(run.run_id), run, c.mode, run_grid)
        clock = clocks.get(run.run_id)
        if clock is not None and clock.missing:
            notes.append(f"{_label(run, arm)} {clock.problem}: left out")
            continue
        value = stats.run_statistic(series, inner, clock.on(series.x) if clock else None)
        if run.diverged and c.diverged == "worst":
            value = stats.diverged_value(inner.name, c.mode, value)
        if math.isnan(value):
            why = clock.problem if clock else f"has no {c.metric} for {inner.describe()}"
            notes.append(f"{_label(run, arm)} {why}")
            continue
        divisor = divisors.get(run.run_id, 1.0)
        if isinstance(divisor, str):  # relative_to: no finite positive param to divide by
            notes.append(f"{_label(run, arm)} {divisor}: left out")
            continue
        param = None
        if c.statistic.name == "spread":
            if run.run_id not in swept:
                notes.append(f"{_label(run, arm)} has no param {c.statistic.params['over']}")
                continue
            param = _param_key(swept[run.run_id])
        out.append(_Value(run, value / divisor, param))
    return out


def _groups(values: list[_Value]) -> dict[float | str, list[float]]:
    keys = sorted({v.param for v in values}, key=lambda k: (isinstance(k, str), k))  # type: ignore[arg-type]
    # One pass, not one per key (a sweep may give every run its own value). A key matches the
    # values == to it, as a scan would: a NaN key matches none.
    found: dict[float | str | None, list[float]] = {}
    for v in values:
        found.setdefault(v.param, []).append(v.value)
    return {k: found[k] if k == k else [] for k in keys}


def _smallest(c: Criterion, per_arm: dict[str, list[_Value]], notes: list[str]) -> int:
    """Runs in the thinnest group (per arm, or per swept value); names it when below min_seeds."""
    sizes: list[tuple[int, str]] = []
    for arm, values in per_arm.items():
        if c.statistic.name != "spread":
            sizes.append((len(values), arm))
            continue
        groups = _groups(values)
        if len(groups) < 2:
            notes.append(f"{arm} has only one value of {c.statistic.params['over']}; spread needs two")
            sizes.append((0, arm))
        over = c.statistic.params["over"]
        sizes.extend((len(g), f"{arm} at {over}={k}") for k, g in groups.items())
    n, where = min(sizes)
    if 0 < n < c.min_seeds:
        notes.insert(0, f"fewer than min_seeds={c.min_seeds} runs for {where} (n={n})")
    return n


def _seed_map(values: list[_Value]) -> dict[Any, float] | None:
    """seed -> value when every run has a distinct known seed, else None (cannot pair)."""
    seeds = [v.run.seed for v in values]
    if any(s is None or s is pd.NA for s in seeds) or len(set(seeds)) != len(seeds):
        return None
    return {s: v.value for s, v in zip(seeds, [v for v in values])}


def interval_for(
    c: Criterion, per_arm: dict[str, list[_Value]], confidence: float = stats.CONFIDENCE
) -> stats.Interval:
    """The criterion's estimate and interval, by the method for its kind of statistic."""
    sides = [per_arm[a] for a in c.arms]
    if c.statistic.name == "spread":
        kind = c.statistic.params.get("kind", "ratio")
        groups = [[g for g in _groups(side).values()] for side in sides]
        base = groups[1] if len(groups) > 1 else None
        return stats.spread_interval(groups[0], kind, c.mode, base, c.relation, confidence)
    if len(sides) == 1:
        return stats.single_interval([v.value for v in sides[0]], confidence)
    a, b = _seed_map(sides[0]), _seed_map(sides[1])
    if a is not None and b is not None and set(a) == set(b):
        order = sorted(a, key=_seed_key)
        return stats.paired_interval(
            [a[s] for s in order], [b[s] for s in order], str(c.relation), confidence
        )
    iv = stats.welch_interval(
        [v.value for v in sides[0]], [v.value for v in sides[1]], str(c.relation), confidence
    )
    return dataclasses.replace(iv, method=iv.method + "; seeds do not match, so unpaired")


def _judge(c: Criterion, iv: stats.Interval, smallest: int, notes: list[str]) -> str:
    if smallest < c.min_seeds:
        return INCONCLUSIVE
    if math.isnan(iv.estimate):
        notes.insert(0, "the statistic is undefined (e.g. both arms diverged)")
        return INCONCLUSIVE
    verdict = decide(c.compare, c.threshold, iv.low, iv.high)
    if verdict == INCONCLUSIVE:
        notes.insert(
            0, f"the 95% interval [{iv.low:.4g}, {iv.high:.4g}] straddles the threshold {c.threshold:g}"
        )
    return verdict


def evaluate_criterion(
    adr: Adr,
    criterion: Criterion,
    evidence: pd.DataFrame,
    scale: str = "smoke",
    *,
    confidence: float = stats.CONFIDENCE,
    vocab_size: float | None = None,
) -> CriterionResult:
    """Judge one criterion; ``evidence`` must already be normalized and of one scale."""
    return _evaluate_criterion(adr, criterion, _Evidence(evidence), scale, confidence, vocab_size)


def _evaluate_criterion(
    adr: Adr, c: Criterion, evidence: _Evidence, scale: str, confidence: float, vocab_size: float | None
) -> CriterionResult:
    result, notes = _new_result(c), []
    runs = _finished_runs(c, evidence, notes)
    result.missing = _missing_runs(adr, c, runs, scale, notes)
    empty = [arm for arm in c.arms if not runs[arm]]
    if empty:
        result.note = "; ".join([f"no runs of {', '.join(empty)}", *notes])
        return result
    per_arm = {arm: _arm_values(c, arm, runs[arm], evidence, notes) for arm in c.arms}
    # Swept values that do not act leave the arm here, before every statistic and guard.
    per_arm, not_acting, dropped = guards.drop_non_acting(adr, c, evidence.table, scale, per_arm)
    for arm, values in per_arm.items():
        result.n[arm] = len(values)
        result.run_ids.extend(v.run.run_id for v in values)
        if not values:
            result.note = "; ".join([f"no usable runs of {arm}", *dropped, *notes])
            return result
    iv = interval_for(c, per_arm, confidence)
    result.estimate, result.ci_low, result.ci_high, result.method = iv.estimate, iv.low, iv.high, iv.method
    result.verdict = _judge(c, iv, _smallest(c, per_arm, notes), notes)
    if result.verdict == INCONCLUSIVE and iv.defined:
        result.seeds_needed = stats.seeds_needed(iv, c.threshold, confidence)
    invalid, result.guards = guards.check(c, evidence.guard_rows, per_arm, vocab_size, not_acting)
    if invalid and result.verdict != NO_DATA:
        result.verdict = INVALID
    diverged = [v.run for arm in c.arms for v in per_arm[arm] if v.run.diverged]
    if diverged:
        rule = "count as worst" if c.diverged == "worst" else "as logged (criterion opts out)"
        notes.append(f"diverged: {', '.join(r.run_id[:8] for r in diverged)} ({rule})")
    result.note = "; ".join([*dropped, *notes])
    return result


def recommend_status(
    human_status: str, results: list[CriterionResult], holm_fail: list[str] | None = None
) -> tuple[str, str]:
    """(recommended status, the rule that produced it).

    Accepted when every primary criterion passes: an intersection–union test, which needs no
    multiplicity correction. Rejected when a primary criterion fails after Holm's correction
    across the primaries (``holm_fail``: the ids failing at level 0.05/m, which is exactly
    when Holm rejects at least one). Otherwise the human status. Superseded and Deprecated
    are lifecycle decisions that evidence does not overturn.
    """
    primary = [r for r in results if r.role == "primary"]
    if human_status in LIFECYCLE_STATUSES:
        return human_status, f"{human_status} is a lifecycle decision the evidence does not overturn"
    if not primary:
        return human_status, "no primary criterion: the human status stands"
    failing = holm_fail if holm_fail is not None else [r.id for r in primary if r.verdict == FAIL]
    if failing:
        return "Rejected", (
            f"Rejected: {', '.join(failing)} fails after Holm's correction across {len(primary)} primary "
            "criteria (family-wise error 5%)"
        )
    if all(r.verdict == PASS for r in primary):
        return (
            "Accepted",
            "Accepted: every primary criterion passes (intersection–union test, no correction needed)",
        )
    undecided = [f"{r.id} {r.verdict}" for r in primary if r.verdict != PASS]
    return human_status, "no decision: " + ", ".join(undecided) + (
        " (a per-criterion FAIL that does not survive Holm's correction does not reject)"
        if any(r.verdict == FAIL for r in primary)
        else ""
    )


def _holm_failures(
    adr: Adr, ev: _Evidence, scale: str, results: list[CriterionResult], vocab_size: float | None
) -> list[str]:
    """Primary criteria that FAIL at two-sided level 0.05/m (m primaries): Holm rejects at least
    one hypothesis exactly when its smallest p-value is below α/m, i.e. Bonferroni's first step."""
    primaries = [c for c in adr.criteria if c.role == "primary"]
    m = len(primaries)
    failing = {r.id for r in results if r.role == "primary" and r.verdict == FAIL}
    level = 1.0 - (1.0 - stats.CONFIDENCE) / max(m, 1)
    out = []
    for c in primaries:
        if c.id in failing:
            again = _evaluate_criterion(adr, c, ev, scale, level, vocab_size)
            if again.verdict == FAIL:
                out.append(c.id)
    return out


def evaluate(
    adr: Adr, evidence: pd.DataFrame, scale: str = "smoke", *, vocab_size: float | None = None
) -> AdrVerdict:
    """Every criterion of ``adr`` judged from the rows of ``evidence`` at ``scale`` (only
    those: another scale's runs never stand in). ``vocab_size``: the uniform PPL for the
    learning guard when the evidence lacks the ``data.vocab_size`` param."""
    ev = normalize_evidence(evidence)
    at_scale = ev["scale"] == scale
    if not at_scale.all():  # usually every row is: no need to copy 800k rows again
        ev = ev[at_scale].reset_index(drop=True)
    judged = _Evidence(ev)
    results = [_evaluate_criterion(adr, c, judged, scale, stats.CONFIDENCE, vocab_size) for c in adr.criteria]
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    holm_fail = _holm_failures(adr, judged, scale, results, vocab_size)
    status, rule = recommend_status(adr.status, results, holm_fail)
    commits = ev.drop_duplicates("run_id")["git_sha"].value_counts().sort_index()
    return AdrVerdict(
        path=str(adr.path),
        title=adr.title,
        scale=scale,
        human_status=adr.status,
        recommended_status=status,
        auto_status=adr.auto_status,
        results=results,
        counts=counts,
        rule=rule,
        commits={str(k): int(v) for k, v in commits.items()},
    )
