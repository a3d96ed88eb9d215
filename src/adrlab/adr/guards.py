"""Validity guards: can an arm's runs speak to a criterion at all?

Checked for every arm a criterion uses, from the evidence table alone (so the verdict stays a
pure function of criteria and evidence). The numeric rules, also in adr/README.md:

- learns: every run's best val PPL is below half the uniform PPL (the vocabulary size) and its
  final val PPL is below 90% of it; otherwise the model did not learn or collapsed back to
  uniform, and the criterion is INVALID;
- acts: for an arm that declares its no-op ``control`` arm (checked when it is a criterion's
  ``arm``), a swept value does not act when its per-epoch val PPL stays within a relative 1e-3
  of the control's, epoch by epoch, for every seed. Such values are dropped from the arm before
  any statistic or other guard sees it (the tuned best, the spread, n, the learning, regime and
  edge guards) and the note names them with their max difference; the criterion is judged on
  the values that act. When no value acts the criterion is INVALID and the arm is kept whole
  (a non-sweep arm is one value: INVALID as before);
- regime (warning): a decay arm's τ_iter above the run's total steps (the decay barely acts)
  or below one epoch (it forgets within an epoch); measured final weight RMS vs √(η/2λ); a
  sweep arm at each of its values;
- edge (warning): a sweep's optimum on the edge of the swept range, when its difference from
  the neighbouring value is distinguishable (a Welch interval that excludes zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from adrlab.adr import stats
from adrlab.adr.document import Adr, Criterion

LEARN_FRACTION = 0.5  # best val PPL must be below this fraction of the uniform PPL
COLLAPSE_FRACTION = 0.9  # final val PPL at or above this fraction of uniform: collapsed
CONTROL_MARGIN = 1e-3  # relative difference below which an arm reproduces its control
VOCAB_PARAM = "data.vocab_size"
SWEEP_PARAM = "regularizer.weight_decay"
VAL_PPL = "val_ppl"  # per epoch: the learning guard's curve, the acts guard's comparison
WEIGHT_RMS = "weight_rms"  # per step: the regime guard's measured RMS


def rows_read(evidence: pd.DataFrame) -> pd.DataFrame:
    """The rows `check` reads: every param, the per-epoch val PPL and the per-step weight RMS.
    Each of its guards filters by kind and metric first, so it finds the same on these rows as
    on the whole table; a caller judging many criteria narrows the table once."""
    kind, metric = evidence["kind"], evidence["metric"]
    read = (
        (kind == "param")
        | ((kind == "epoch") & (metric == VAL_PPL))
        | ((kind == "step") & (metric == WEIGHT_RMS))
    )
    return evidence[read]


def _last_params(evidence: pd.DataFrame, run_ids: Sequence[str], key: str) -> pd.Series:
    """run_id -> the last numeric value of param ``key`` (NaN skipped), for many runs at once."""
    rows = evidence[(evidence["kind"] == "param") & (evidence["metric"] == key)]
    rows = rows[rows["run_id"].isin(run_ids)]
    values = pd.to_numeric(rows["value"], errors="coerce")
    return values.groupby(rows["run_id"], sort=False).last()  # last() skips NaN, as dropna did


def _best_final(evidence: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """run_id -> best and final val PPL over its epochs (one filter for many runs)."""
    rows = evidence[(evidence["kind"] == "epoch") & (evidence["metric"] == VAL_PPL)]
    rows = rows[rows["run_id"].isin(run_ids)]
    frame = pd.DataFrame(
        {"run_id": rows["run_id"], "x": rows["x"], "ppl": pd.to_numeric(rows["value"], errors="coerce")}
    ).dropna(subset=["ppl"])
    frame = frame.sort_values(["run_id", "x"], kind="mergesort")
    grouped = frame.groupby("run_id", sort=False)["ppl"]
    return pd.DataFrame({"best": grouped.min(), "final": grouped.last()})


def learning_guard(
    evidence: pd.DataFrame, arm: str, run_ids: Sequence[str], vocab_size: float | None
) -> str | None:
    """A finding when a (non-diverged) run of ``arm`` did not learn or collapsed to uniform."""
    bad = []
    curves = _best_final(evidence, run_ids)
    # Plain dicts: a pandas lookup per run cost more than the rest of the guard.
    vocabs = _last_params(evidence, run_ids, VOCAB_PARAM).to_dict()
    best_of, final_of = curves["best"].to_dict(), curves["final"].to_dict()
    for run_id in run_ids:
        vocab = float(vocabs.get(run_id, math.nan))
        vocab = vocab_size if math.isnan(vocab) and vocab_size else vocab
        if run_id not in best_of or not vocab or math.isnan(vocab):
            continue
        best, final = float(best_of[run_id]), float(final_of[run_id])
        if best >= LEARN_FRACTION * vocab or final >= COLLAPSE_FRACTION * vocab:
            bad.append(f"{run_id[:8]} best {best:.4g}, final {final:.4g}")
    if not bad:
        return None
    return (
        f"{arm} did not learn or collapsed (uniform PPL = vocab {vocab:.0f}; needs best < "
        f"{LEARN_FRACTION:g}× and final < {COLLAPSE_FRACTION:g}× uniform): {'; '.join(bad)}"
    )


Series = tuple[np.ndarray, np.ndarray]  # one run's per-epoch (x, value)


def _rel_diff(a: Series, b: Series) -> float:
    """Max relative difference of two runs' per-epoch values over the epochs both logged (a
    value, not NaN); inf when they share none."""
    _, at_a, at_b = np.intersect1d(a[0], b[0], return_indices=True)
    va, vb = a[1][at_a], b[1][at_b]
    both = ~(np.isnan(va) | np.isnan(vb))
    if not both.any():
        return math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.abs(va[both] / vb[both] - 1.0)))


def _epoch_series(evidence: pd.DataFrame, run_ids: Sequence[str], metric: str = VAL_PPL) -> dict[str, Series]:
    """run_id -> the per-epoch (x, value) of each run that logged ``metric``, the table filtered
    once (once per run cost ~10 ms a run on an 800k-row table: seconds for a sweep arm)."""
    rows = evidence[(evidence["kind"] == "epoch") & (evidence["metric"] == metric)]
    rows = rows[rows["run_id"].isin(run_ids)]
    x = rows["x"].to_numpy(dtype=float)
    values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=float)
    return {run_id: (x[at], values[at]) for run_id, at in rows.groupby("run_id", sort=False).indices.items()}


def _swept_keys(evidence: pd.DataFrame, values: Sequence[Any], over: str) -> list[Any]:
    """The swept value each run belongs to: its spread param, else its logged ``over`` param."""
    unknown = [v.run.run_id for v in values if v.param is None]
    logged = _last_params(evidence, unknown, over) if unknown else pd.Series(dtype=float)
    return [v.param if v.param is not None else logged.get(v.run.run_id, math.nan) for v in values]


def _keys_text(keys: Sequence[Any]) -> str:
    return ", ".join(f"{k:g}" if isinstance(k, float) else str(k) for k in keys)


VALUES_NAMED = 6  # a note names at most this many swept values (a sweep arm may have hundreds)


def _some_keys_text(keys: Sequence[Any], text: Callable[[Any], str] = lambda k: _keys_text([k])) -> str:
    """``text`` of the first VALUES_NAMED keys, then how many more (and up to which)."""
    shown = ", ".join(text(k) for k in keys[:VALUES_NAMED])
    more = len(keys) - VALUES_NAMED
    if more <= 0:
        return shown
    return f"{shown} and {more} more values up to {_keys_text([keys[-1]])}"


def _order(key: Any) -> tuple[bool, Any]:
    """Sort key for swept values: numbers first, then words (a categorical sweep)."""
    return isinstance(key, str), key


def _non_acting(
    evidence: pd.DataFrame, control: str, values: Sequence[Any], keys: Sequence[Any]
) -> tuple[dict[Any, float], int]:
    """(swept value -> max relative difference over seeds, for the values within CONTROL_MARGIN
    of ``control`` for every seed with a control run; how many values could be compared)."""
    control_runs = evidence[(evidence["arm"] == control)].drop_duplicates("run_id")
    by_seed = dict(zip(control_runs["seed"], control_runs["run_id"]))
    pairs = [
        (key, v.run.run_id, by_seed[v.run.seed]) for v, key in zip(values, keys) if v.run.seed in by_seed
    ]
    series = _epoch_series(evidence, list({run for _, *runs in pairs for run in runs}))
    empty = (np.empty(0), np.empty(0))
    groups: dict[Any, list[float]] = {}
    for key, run, control_run in pairs:
        groups.setdefault(key, []).append(_rel_diff(series.get(run, empty), series.get(control_run, empty)))
    return {k: max(d) for k, d in groups.items() if d and max(d) < CONTROL_MARGIN}, len(groups)


def control_guard(
    evidence: pd.DataFrame, arm: str, control: str, values: Sequence[Any], over: str
) -> tuple[list[Any], str | None, str | None]:
    """(the values that act, an INVALID finding, a note on what was dropped) for ``arm`` against
    its no-op ``control``, per swept value. A value is dropped only when shown not to act (a
    seed without a control run is not compared). When no value acts the arm stays whole, so the
    block still shows what was measured, and the finding makes the criterion INVALID."""
    keys = _swept_keys(evidence, values, over)
    noop, compared = _non_acting(evidence, control, values, keys)
    if not noop:
        return list(values), None, None
    margin = f"a relative {CONTROL_MARGIN:g} of its control {control} at every epoch for every seed"
    acting = [v for v, k in zip(values, keys) if k not in noop]
    if not acting:
        where = "" if compared <= 1 else f" at {over}={_some_keys_text(sorted(noop, key=_order))}"
        worst = max(noop.values())
        return (
            list(values),
            f"the intervention does not act: {arm}{where} stays within {margin} (max difference {worst:.2g})",
            None,
        )
    dropped = sorted(noop, key=_order)
    named = _some_keys_text(dropped, lambda k: f"{_keys_text([k])} (max difference {noop[k]:.2g})")
    kept = sorted({k for k in keys if k not in noop}, key=_order)
    note = (
        f"{arm} at {over}={named} {'does' if len(dropped) == 1 else 'do'} not act (within {margin}): "
        f"left out of the arm, the criterion is judged on {over}={_some_keys_text(kept)}"
    )
    return acting, None, note


def drop_non_acting(
    adr: Adr, c: Criterion, evidence: pd.DataFrame, scale: str, per_arm: dict[str, list[Any]]
) -> tuple[dict[str, list[Any]], list[str], list[str]]:
    """The acts guard, applied before any statistic so that all of them see the same arm:
    (``per_arm`` without the swept values of ``c.arm`` that do not act, INVALID findings, notes)."""
    exp = adr.experiments.get(scale)
    declared = exp.arms.get(c.arm) if exp is not None else None
    if declared is None or not declared.control or c.arm not in per_arm:
        return per_arm, [], []
    over = str(c.statistic.params.get("over", SWEEP_PARAM))
    kept, invalid, note = control_guard(evidence, c.arm, declared.control, per_arm[c.arm], over)
    return {**per_arm, c.arm: kept}, [invalid] if invalid else [], [note] if note else []


REGIME_PARAMS = ("derived.lambda", "derived.tau_iter", "derived.steps_per_epoch")
REGIME_VALUES_SHOWN = 6  # a sweep arm names at most this many values whose regime misses


def regime_guard(
    evidence: pd.DataFrame, arm: str, run_ids: Sequence[str], over: str = SWEEP_PARAM
) -> str | None:
    """A warning when a decay arm's time scale misses the run, with measured vs predicted RMS.

    η, λ and the schedule are the same for every seed of one value, so one run stands for each
    distinct (λ, τ_iter, steps per epoch); a sweep arm's warning names each value that misses."""
    if not run_ids:
        return None
    params = evidence[evidence["kind"] == "param"]  # once, for the params read below
    table = pd.DataFrame({k: _last_params(params, run_ids, k) for k in REGIME_PARAMS})
    table = table.reindex([r for r in dict.fromkeys(run_ids) if r in table.index])
    lam, tau, per_epoch = (table[k] for k in REGIME_PARAMS)
    table = table[(lam > 0) & np.isfinite(tau) & (per_epoch > 0)].drop_duplicates()
    if table.empty:
        return None
    epochs = _epoch_counts(evidence, list(table.index))
    found = {}
    for run_id, row in table.iterrows():
        parts = _regime_parts(row["derived.tau_iter"], row["derived.steps_per_epoch"], epochs.get(run_id, 0))
        if parts:
            found[run_id] = parts
    if not found:
        return None
    measured = _final_step_values(evidence, list(found), WEIGHT_RMS)
    predicted = _last_params(params, list(found), "derived.predicted_weight_rms")
    for run_id, parts in found.items():
        if run_id in measured.index and math.isfinite(predicted.get(run_id, math.nan)):
            parts.append(
                f"final weight RMS {measured[run_id]:.3g} vs predicted √(η/2λ) {predicted[run_id]:.3g}"
            )
    if len(table) == 1:
        return f"regime of {arm}: " + "; ".join(next(iter(found.values())))
    swept = _last_params(params, list(found), over).reindex(list(found))
    order = sorted(found, key=lambda r: (math.isnan(swept[r]), swept[r]))  # by swept value
    shown = [f"at {over}={swept[r]:g}: " + "; ".join(found[r]) for r in order[:REGIME_VALUES_SHOWN]]
    more = len(found) - len(shown)
    return f"regime of {arm} " + " | ".join(shown) + (f" | and {more} more of its values" if more else "")


def _regime_parts(tau: float, per_epoch: float, n_epochs: int) -> list[str]:
    total = per_epoch * n_epochs
    if tau > total:
        return [f"τ_iter {tau:.4g} steps exceeds the run's {total:.0f} steps: the decay barely acts"]
    if tau < per_epoch:
        return [
            f"τ_iter {tau:.4g} steps is below one epoch ({per_epoch:.0f} steps): "
            "the weights forget within an epoch"
        ]
    return []


def _epoch_counts(evidence: pd.DataFrame, run_ids: Sequence[str], metric: str = VAL_PPL) -> pd.Series:
    """run_id -> how many epochs logged ``metric`` (for many runs at once)."""
    rows = evidence[(evidence["kind"] == "epoch") & (evidence["metric"] == metric)]
    return rows[rows["run_id"].isin(run_ids)].groupby("run_id", sort=False).size()


def _final_step_values(evidence: pd.DataFrame, run_ids: Sequence[str], metric: str) -> pd.Series:
    """run_id -> ``metric``'s value at its last logged step."""
    rows = evidence[(evidence["kind"] == "step") & (evidence["metric"] == metric)]
    rows = rows[rows["run_id"].isin(run_ids)].sort_values("x", kind="stable")
    return pd.to_numeric(rows["value"], errors="coerce").groupby(rows["run_id"], sort=False).last()


def edge_guard(arm: str, values: Sequence[Any], over: str, mode: str) -> str | None:
    """A warning when a sweep's best swept value is an edge of the range and distinguishable
    from its neighbour (a Welch interval of the difference that excludes zero)."""
    groups: dict[Any, list[float]] = {}
    for v in values:
        groups.setdefault(v.param, []).append(v.value)
    keys = sorted(k for k in groups if isinstance(k, float))
    if len(keys) < 3:
        return None
    means = [float(np.mean(groups[k])) for k in keys]
    best = int(np.argmin(means) if mode == "min" else np.argmax(means))
    if best not in (0, len(keys) - 1):
        return None
    neighbour = 1 if best == 0 else len(keys) - 2
    iv = stats.welch_interval(groups[keys[best]], groups[keys[neighbour]], "difference")
    if not (iv.low > 0 or iv.high < 0):
        return None
    return (
        f"{arm}: the optimum {over}={keys[best]:g} is on the edge of the swept range and differs from "
        f"{keys[neighbour]:g} beyond noise: widen the sweep"
    )


def check(
    c: Criterion,
    evidence: pd.DataFrame,
    per_arm: dict[str, list[Any]],
    vocab_size: float | None,
    invalid: Sequence[str] = (),
) -> tuple[bool, list[str]]:
    """(invalid, findings) for the arms of ``c`` (after `drop_non_acting`; its INVALID findings
    come in as ``invalid``): learning findings invalidate, regime and edge findings warn."""
    invalid = list(invalid)
    warnings: list[str] = []
    over = str(c.statistic.params.get("over", SWEEP_PARAM))
    for arm, values in per_arm.items():
        finished = [v.run.run_id for v in values if not v.run.diverged]
        found = learning_guard(evidence, arm, finished, vocab_size)
        invalid += [found] if found else []
        found = regime_guard(evidence, arm, finished, over)
        warnings += [found] if found else []
        if c.statistic.name == "spread":
            found = edge_guard(arm, values, over, c.mode)
            warnings += [found] if found else []
    return bool(invalid), [f"INVALID: {m}" for m in invalid] + [f"warning: {m}" for m in warnings]
