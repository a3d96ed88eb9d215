"""Simulated coverage, false decisions and power of the ADR interval methods (fixed RNG).

Imported by tests/test_adr_coverage.py, which checks the rates and that adr/README.md shows
this very table; run `python -m tests.adr_simulation` to print the table.

Each replicate is one evidence table: n seeds of two arms (a relation, per seed), of one arm,
or of a three-value sweep. Per-seed noise comes from a normal law (for which a t-interval is
exact), a skewed law (centred lognormal, σ = 0.5, skewness 1.75), a heavy-tailed law (Student
t, 3 df), and ``residuals``, resampled from the committed evidence as it is now
(reports/adr-NNNN/runs-<scale>.csv of every ADR and scale): log final val PPL, each value
externally studentised within its group (its distance from the mean of the group's other seeds
over their sd and √(1 + 1/(n − 1))). A group is one arm (one swept value) for a single arm or a
sweep, and for a relation the per-seed differences arm − baseline of every relation criterion.
That is what the engine faces: every seed of a comparison shares one noise scale, and a
relation's t runs on per-seed differences (the committed pairs' seed correlations run from
−0.6 to 1.0, so two independent arms would be the wrong model). Externally studentised
residuals are exactly Student t with n − 2 df for normal noise at any scale, so what departs
from that is the committed shape (the right skew of arms at the edge of stability), and the
tails are not cut: residuals standardised by their own group's sd are bounded by (n − 1)/√n
(1.79 at 5 seeds) and made a t-interval look liberal (about 3.4% per side at n = 2–5) even
for normal noise.

Not pooled: raw residuals across arms (their sds span 170×, so each seed would draw another
arm's scale, a mixture no comparison sees, which made the t-interval look too conservative:
0.7% per side at n = 3), arms the engine's learning guard marks INVALID (never judged), groups
with a diverged or non-finite run (judged by the range rule, not t), and repeats of identical
runs (the same configuration and seeds in several ADRs or arms count once). All laws have unit
sd, so a resampled "1 sd" effect is large next to the typical seed (power reads high).

Errors of a rate: Monte-Carlo, 0.11 percentage points at 2.5% with REPS = 20,000 (0.17 at
6.5%); the pool itself is a sample of about 35 groups, and for normal noise pooled the same way
a rate varies by about 1 point (sd) from one set of groups to another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from adrlab.adr import guards, stats
from adrlab.adr.document import Adr, parse_adr
from adrlab.adr.report import snapshot_path
from adrlab.adr.verdict import load_evidence

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261201
REPS = 20_000
NS: tuple[int, ...] = (2, 3, 5, 10)
LAWS: tuple[str, ...] = ("normal", "skewed", "heavy", "residuals")
EFFECTS: tuple[float, ...] = (1.0, 2.0)  # true effect in units of the per-seed difference's sd
SPREAD_MEANS = np.array([0.0, 1.0, 2.0])  # three swept values, unit-sd noise
SKEW_SIGMA = 0.5  # lognormal σ of the skewed law: skewness 1.75
MIN_GROUP = 3  # seeds a group needs to be studentised (the other seeds' sd needs two)


@dataclass(frozen=True)
class Pools:
    """The resampled law: unit-sd pools for one arm's seeds and for per-seed differences."""

    arm: np.ndarray
    pair: np.ndarray


def final_log_ppl(evidence: pd.DataFrame) -> pd.DataFrame:
    """One row per run (index run_id): arm, swept value (NaN without one), seed, status and v,
    the log of the run's last val PPL."""
    ppl = evidence[(evidence["kind"] == "epoch") & (evidence["metric"] == "val_ppl")]
    last = ppl.sort_values("x", kind="mergesort").groupby("run_id")["value"].last()
    runs = ppl.drop_duplicates("run_id").set_index("run_id").loc[last.index, ["arm", "seed", "status"]]
    swept = evidence[(evidence["kind"] == "param") & (evidence["metric"] == guards.SWEEP_PARAM)]
    swept = pd.to_numeric(swept.set_index("run_id")["value"], errors="coerce")
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(pd.to_numeric(last, errors="coerce").astype(float))
    return runs.assign(swept=swept[~swept.index.duplicated(keep="last")].reindex(last.index), v=v)


def judged_groups(evidence: pd.DataFrame) -> dict[tuple[str, float], pd.Series]:
    """(arm, swept value) -> seed-indexed log final PPL, for the groups the engine would judge
    with a t-interval: every run finished and finite, and the learning guard silent."""
    out = {}
    runs = final_log_ppl(evidence)
    for (arm, swept), g in runs.groupby(["arm", runs["swept"].fillna(-1.0)], sort=True):
        if (g["status"] != "FINISHED").any() or not np.isfinite(g["v"]).all() or len(g) < MIN_GROUP:
            continue
        if guards.learning_guard(evidence, arm, list(g.index), None) is None:
            out[(arm, swept)] = g.set_index("seed")["v"].sort_index()
    return out


def relation_differences(adr: Adr, groups: dict[tuple[str, float], pd.Series]) -> list[pd.Series]:
    """Per-seed arm − baseline of every (non-spread) relation criterion whose arms are judged
    groups of one swept value each, over the seeds both arms ran."""
    by_arm: dict[str, list[pd.Series]] = {}
    for (arm, _), values in groups.items():
        by_arm.setdefault(arm, []).append(values)
    out = []
    for c in adr.criteria:
        if c.baseline is None or c.statistic.name == "spread":
            continue
        a, b = by_arm.get(c.arm, []), by_arm.get(c.baseline, [])
        if len(a) == 1 and len(b) == 1:
            d = (a[0] - b[0]).dropna()
            out += [d] if len(d) >= MIN_GROUP else []
    return out


def committed_groups(root: Path = ROOT) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(arm groups, relation differences) over every ADR and scale with a committed snapshot;
    identical groups at one scale (the same runs repeated in several ADRs or arms) count once."""
    arms: dict[tuple, np.ndarray] = {}
    pairs: dict[tuple, np.ndarray] = {}
    for doc in sorted((root / "adr").glob("[0-9][0-9][0-9][0-9]-*.md")):
        adr = parse_adr(doc)
        for scale in adr.experiments:
            path = snapshot_path(root / "reports" / f"adr-{adr.number}", scale)
            if not path.is_file():
                continue
            groups = judged_groups(load_evidence(path, scale))
            for target, found in ((arms, list(groups.values())), (pairs, relation_differences(adr, groups))):
                for g in found:
                    target.setdefault((scale, tuple(np.round(g.to_numpy(), 12))), g.to_numpy(dtype=float))
    return list(arms.values()), list(pairs.values())


def studentised_residuals(group: np.ndarray) -> np.ndarray:
    """Externally studentised residuals: (x_i − mean of the rest) / (sd of the rest ·
    √(1 + 1/(n − 1))), exactly Student t with n − 2 df for normal noise; empty when the other
    seeds of some value do not vary."""
    others = np.where(~np.eye(group.size, dtype=bool), group[None, :], np.nan)
    sd = np.nanstd(others, axis=1, ddof=1)
    if not (sd > 0).all():
        return np.array([])
    return (group - np.nanmean(others, axis=1)) / (sd * np.sqrt(1 + 1 / (group.size - 1)))


def studentised(groups: list[np.ndarray]) -> np.ndarray:
    """Every group's externally studentised residuals, pooled, scaled to unit sd."""
    return _unit(np.concatenate([studentised_residuals(g) for g in groups]))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


@functools.cache  # read once per session: the test module and its fixture both ask
def committed_noise(root: Path = ROOT) -> Pools:
    arms, pairs = committed_groups(root)
    return Pools(studentised(arms), studentised(pairs))


def draw(
    law: str, shape: tuple[int, ...], rng: np.random.Generator, noise: Pools, side: str = "arm"
) -> np.ndarray:
    if law == "normal":
        return rng.standard_normal(shape)
    if law == "skewed":
        s = SKEW_SIGMA
        x = rng.lognormal(0.0, s, shape)
        return (x - np.exp(s**2 / 2)) / np.sqrt((np.exp(s**2) - 1) * np.exp(s**2))
    if law == "heavy":
        return rng.standard_t(3, shape) / np.sqrt(3.0)
    return rng.choice(getattr(noise, side), size=shape, replace=True)


def t_bounds(d: np.ndarray, level: float = stats.CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised Student-t interval of each row's mean (the method of stats._t_on)."""
    n = d.shape[-1]
    half = scipy_stats.t.ppf(1 - (1 - level) / 2, n - 1) * d.std(axis=-1, ddof=1) / np.sqrt(n)
    return d.mean(axis=-1) - half, d.mean(axis=-1) + half


def relation_draws(law: str, n: int, rng: np.random.Generator, noise: Pools) -> np.ndarray:
    """Per-seed arm − baseline on the analysis scale, unit sd: the committed per-seed
    differences for a resampled law; else two independent draws (the seed effect cancels)."""
    if law == "residuals":
        return draw(law, (REPS, n), rng, noise, "pair")
    return (draw(law, (REPS, n), rng, noise) - draw(law, (REPS, n), rng, noise)) / np.sqrt(2.0)


def spread_bounds(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised simultaneous (Bonferroni) interval of stats.spread_interval."""
    k = x.shape[1]
    lo, hi = t_bounds(x, 1 - (1 - stats.CONFIDENCE) / k)
    if kind == "min":
        return lo.min(axis=1), hi.min(axis=1)
    return np.maximum(0.0, lo.max(axis=1) - hi.min(axis=1)), hi.max(axis=1) - lo.min(axis=1)


def rates(low: np.ndarray, high: np.ndarray, truth: float) -> tuple[float, float]:
    """(false PASS, false FAIL): the interval wholly below / wholly above the true value, so a
    claim on the threshold = truth would be decided wrongly one way or the other."""
    return float(np.mean(high < truth)), float(np.mean(low > truth))


def simulate() -> list[dict[str, object]]:
    rng = np.random.default_rng(SEED)
    noise = committed_noise()
    rows: list[dict[str, object]] = []
    for law in LAWS:
        for n in NS:
            d = relation_draws(law, n, rng, noise)
            low, high = t_bounds(d)
            fp, ff = rates(low, high, 0.0)
            power = [float(np.mean(high - e < 0.0)) for e in EFFECTS]  # truth −e vs threshold 0
            single = draw(law, (REPS, n), rng, noise)
            s_fp, s_ff = rates(*t_bounds(single), 0.0)
            sweep = draw(law, (REPS, len(SPREAD_MEANS), n), rng, noise) + SPREAD_MEANS[None, :, None]
            m_fp, m_ff = rates(*spread_bounds(sweep, "min"), float(SPREAD_MEANS.min()))
            r_fp, r_ff = rates(*spread_bounds(sweep, "range"), float(np.ptp(SPREAD_MEANS)))
            rows.append(
                {"law": law, "n": n, "paired": (fp, ff), "power": power, "single": (s_fp, s_ff),
                 "spread_min": (m_fp, m_ff), "spread_range": (r_fp, r_ff)}
            )  # fmt: skip
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table_markdown(rows: list[dict[str, object]]) -> str:
    head = (
        "| law | n | relation (paired t): false PASS / false FAIL | power at effect 1 sd / 2 sd "
        "| one arm (t): false PASS / false FAIL | spread `min` (Bonferroni t) | spread `range` |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [
            str(r["law"]),
            str(r["n"]),
            " / ".join(_pct(x) for x in r["paired"]),  # type: ignore[union-attr]
            " / ".join(_pct(x) for x in r["power"]),  # type: ignore[union-attr]
            " / ".join(_pct(x) for x in r["single"]),  # type: ignore[union-attr]
            " / ".join(_pct(x) for x in r["spread_min"]),  # type: ignore[union-attr]
            " / ".join(_pct(x) for x in r["spread_range"]),  # type: ignore[union-attr]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table_markdown(simulate()))
