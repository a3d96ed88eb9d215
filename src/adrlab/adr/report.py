"""`adrlab report`: judge each ADR from its evidence, write the verdict block, the report
(reports/adr-NNNN/README.md with plots) and the index (reports/README.md).

Evidence comes from the tracking store when it holds the ADR's runs (and is then exported
to reports/adr-NNNN/runs.csv); otherwise from that committed snapshot, so a fresh clone
re-derives and checks every committed verdict.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from adrlab import tracking
from adrlab.adr.costs import COST_NOTE, cost_table
from adrlab.adr.document import Adr, AdrError, parse_adr
from adrlab.adr.history import append_history, history_markdown, verdict_diff
from adrlab.adr.runs import all_adr_paths, arm_run_overrides, collect_evidence, experiment_at, find_adr
from adrlab.adr.verdict import AdrVerdict, evaluate, load_evidence, save_evidence
from adrlab.adr.workspace import adr_config_dirs
from adrlab.adr.writeback import EditedBlockError, find_block, render_block, write_verdict
from adrlab.config import compose, project_root, reports_root
from adrlab.mdtable import markdown_table

PNG_META = {"Software": None}  # no library version in the file: re-rendering stays byte-stable
PLOT_BASES: tuple[str, ...] = ("forest", "memory", "sensitivity", "traces", "val_ppl")
HISTORY = "history.csv"


@dataclass
class AdrOutcome:
    path: Path
    number: str
    title: str
    status: str
    verdict: AdrVerdict | None
    source: str  # store | snapshot | none
    write: str  # unchanged | written | stale | refused-edited | kept | skipped
    message: str
    evidence_date: str = ""


def reports_dir() -> Path:
    return reports_root()


def adr_report_dir(adr: Adr) -> Path:
    return reports_dir() / f"adr-{adr.number}"


def data_description(adr: Adr, scale: str) -> str:
    """What the arms at `scale` train on, from each arm's own composed config (not from the
    scale's overrides alone: an override that loses, or a sweep arm that never sees the scale's
    overrides, would otherwise be described as the scale). Arms that differ are named."""
    exp = experiment_at(adr, scale)
    arms_by_setup: dict[str, list[str]] = {}
    for arm, override_lists in arm_run_overrides(adr, scale).items():
        arms_by_setup.setdefault(
            setup_description(compose(override_lists[0], config_dirs=adr_config_dirs(adr))), []
        ).append(arm)
    if len(arms_by_setup) == 1:
        text = next(iter(arms_by_setup))
    else:
        text = "; ".join(f"{setup} ({', '.join(arms)})" for setup, arms in arms_by_setup.items())
    return f"{text}, seeds {list(exp.seeds)}"


def setup_description(cfg: DictConfig) -> str:
    model = f"{cfg.model.name} model ({cfg.model.d_model}d × {cfg.model.n_layers} layers)"
    return f"{cfg.data.name} data, {model}, {cfg.trainer.epochs} epochs"


def evidence_date(evidence: pd.DataFrame) -> str:
    starts = evidence[(evidence["kind"] == "param") & (evidence["metric"] == "run.start_time")]["value"]
    if starts.empty:
        return ""
    return pd.Timestamp(float(starts.max()), unit="ms").strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- plots


def _series(evidence: pd.DataFrame, kind: str, metric: str) -> pd.DataFrame:
    return evidence[(evidence["kind"] == kind) & (evidence["metric"] == metric)]


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG_META)
    plt.close(fig)
    return path.name


def swept_params(adr: Adr) -> tuple[str, ...]:
    """Parameters an ADR sweeps (its spread criteria's ``over``; λ by default)."""
    keys = {str(c.statistic.params["over"]) for c in adr.criteria if c.statistic.name == "spread"}
    return tuple(sorted(keys or {"regularizer.weight_decay"}))


def curve_labels(evidence: pd.DataFrame, swept: tuple[str, ...]) -> pd.Series:
    """run_id -> curve label: the arm, plus the swept value for an arm whose runs differ in
    it (a sweep arm is drawn per swept value, never averaged across λ)."""
    runs = evidence.drop_duplicates("run_id").set_index("run_id")["arm"].astype(str)
    labels = runs.copy()
    params = evidence[(evidence["kind"] == "param") & evidence["metric"].isin(swept)]
    for key in swept:
        values = params[params["metric"] == key].drop_duplicates("run_id").set_index("run_id")["value"]
        for arm in runs.unique():
            ids = runs.index[(runs == arm).to_numpy() & runs.index.isin(values.index)]
            arm_values = values.reindex(ids).tolist()
            if len({str(v) for v in arm_values}) > 1:
                short = key.rsplit(".", 1)[-1]
                # One assignment for the arm (one per run cost ~0.4 s at 1000 runs a sweep arm).
                labels[ids] = [
                    f"{arm} {short}={v:g}" if isinstance(v, float) else f"{arm} {key}={v}" for v in arm_values
                ]
    return labels


def plot_epoch_metric(
    evidence: pd.DataFrame,
    metric: str,
    path: Path,
    floor: float | None = None,
    swept: tuple[str, ...] = ("regularizer.weight_decay",),
) -> str | None:
    data = _series(evidence, "epoch", metric)
    if data.empty:
        return None
    labels = curve_labels(evidence, swept)
    # One pivot for every run, split per curve on its numpy array (a pivot, or a DataFrame
    # slice, per curve cost seconds for a sweep arm of hundreds of λ values).
    everything = data.pivot_table(index="x", columns="run_id", values="value")
    curves = labels.reindex(everything.columns)
    all_x, values = everything.index.to_numpy(), everything.to_numpy()
    names = sorted(curves.dropna().unique())
    # Each curve's columns found once (comparing every label per curve cost ~0.3 s at 1000 curves).
    columns_of = pd.Series(np.arange(len(curves))).groupby(curves.to_numpy()).indices
    bands = len(names) <= BAND_LIMIT
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for curve in names:
        x, table = _curve_table(all_x, values, columns_of[curve])
        # The same arithmetic as DataFrame.mean(axis=1): NaN as 0 in the sum, divided by count.
        mean = np.where(np.isnan(table), 0.0, table).sum(axis=1) / (~np.isnan(table)).sum(axis=1)
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=f"{curve} (n={table.shape[1]})")
        if bands and table.shape[1] > 1:
            ax.fill_between(
                x, np.nanmin(table, axis=1), np.nanmax(table, axis=1), color=line.get_color(), alpha=0.15
            )
    if floor:
        ax.axhline(floor, color="grey", ls=":", lw=1, label=f"entropy floor {floor:.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_yscale("log")
    band = "band = min–max over seeds" if bands else f"min–max bands omitted past {BAND_LIMIT} curves"
    ax.set_title(f"{metric} per arm and swept value (mean, {band})")
    _legend(ax, len(names))
    return _save(fig, path)


def _curve_table(x: np.ndarray, values: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One curve's (x, x × run values): its runs' columns without the x values where all of
    them are NaN, then without runs that have no value left (as the per-curve pivot had)."""
    table = values[:, columns]
    rows = ~np.isnan(table).all(axis=1)
    table = table[rows]
    return x[rows], table[:, ~np.isnan(table).all(axis=0)]


LEGEND_LIMIT = 40  # curves; past this a legend is unreadable and laying it out took seconds
BAND_LIMIT = 40  # curves; past this the bands hide the lines and drawing them took ~1 s


def _legend(ax, curves: int) -> None:
    if curves <= LEGEND_LIMIT:
        ax.legend(fontsize=6, ncol=2)
        return
    note = f"{curves} curves (one per arm and swept value): legend omitted (see the sensitivity plot)"
    ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=6, va="bottom")


VERDICT_COLOURS = {
    "PASS": "tab:green",
    "FAIL": "tab:red",
    "INCONCLUSIVE": "tab:orange",
    "INVALID": "tab:purple",
}


def plot_forest(verdict: AdrVerdict, path: Path) -> str | None:
    """Each criterion's estimate and 95% interval against its threshold, coloured by verdict
    (one row per criterion, each on its own axis: the criteria have different units)."""
    rows = [
        r
        for r in verdict.results
        if np.isfinite(r.estimate) or np.isfinite(r.ci_low) or np.isfinite(r.ci_high)
    ]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 0.9 * len(rows) + 0.8), squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        colour = VERDICT_COLOURS.get(r.verdict, "grey")
        finite = [v for v in (r.estimate, r.ci_low, r.ci_high, r.threshold_value) if np.isfinite(v)]
        span = (max(finite) - min(finite)) or abs(finite[0]) or 1.0
        lo_edge, hi_edge = min(finite) - 0.15 * span, max(finite) + 0.15 * span
        low = r.ci_low if np.isfinite(r.ci_low) else lo_edge
        high = r.ci_high if np.isfinite(r.ci_high) else hi_edge
        ax.hlines(0, low, high, color=colour, lw=3)
        if np.isfinite(r.estimate):
            ax.plot([r.estimate], [0], "o", color=colour)
        ax.axvline(r.threshold_value, color="black", ls="--", lw=1)
        ax.set_xlim(lo_edge, hi_edge)
        ax.set_yticks([])
        ax.set_ylabel(r.id, rotation=0, ha="right", va="center", fontsize=7)
        ax.set_title(f"{r.verdict}: {r.threshold}", fontsize=7, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(
        f"ADR criteria at scale {verdict.scale}: estimate, 95% interval, threshold (dashed)", fontsize=9
    )
    return _save(fig, path)


VALUES_SHOWN = 8  # a sweep arm's values tabulated and drawn, spread over its range (ends included)


def shown_runs(
    evidence: pd.DataFrame, swept: tuple[str, ...], candidates: Sequence[str] | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, run_id) of the runs that stand for each arm, or for each swept value of a sweep
    arm (one seed is enough: η and λ are fixed within a value; its lowest run id), ordered by
    arm and then by value; at most VALUES_SHOWN per arm, with a note for each arm cut down."""
    labels = curve_labels(evidence, swept)
    if candidates is not None:
        labels = labels[labels.index.isin(list(candidates))]
    arms = evidence.drop_duplicates("run_id").set_index("run_id")["arm"].astype(str)
    params = evidence[(evidence["kind"] == "param") & evidence["metric"].isin(swept)].drop_duplicates(
        "run_id"
    )
    values = pd.to_numeric(params.set_index("run_id")["value"], errors="coerce")
    frame = pd.DataFrame(
        {"label": labels, "arm": arms.reindex(labels.index), "value": values.reindex(labels.index)}
    )
    frame = frame.rename_axis("run_id").reset_index().sort_values("run_id").drop_duplicates("label")
    frame = frame.sort_values(["arm", "value", "label"], na_position="first", kind="stable")
    shown: list[tuple[str, str]] = []
    notes: list[str] = []
    for arm, group in frame.groupby("arm", sort=False):
        keep = np.unique(np.round(np.linspace(0, len(group) - 1, min(len(group), VALUES_SHOWN))).astype(int))
        shown += list(zip(group["label"].iloc[keep], group["run_id"].iloc[keep], strict=True))
        if len(keep) < len(group):
            notes.append(f"{arm}: {len(keep)} of its {len(group)} swept values shown, spread over the range")
    return shown, notes


def plot_step_traces(evidence: pd.DataFrame, metrics: list[str], path: Path) -> str | None:
    present = [m for m in metrics if not _series(evidence, "step", m).empty]
    if not present:
        return None
    fig, axes = plt.subplots(len(present), 1, figsize=(7.5, 3.0 * len(present)), squeeze=False)
    for ax, metric in zip(axes[:, 0], present):
        data = _series(evidence, "step", metric)
        for arm, rows in data.groupby("arm", sort=True):
            mean = rows.groupby("x")["value"].mean()
            ax.plot(mean.index, mean.values, lw=1, label=arm)
        ax.set_ylabel(metric)
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("per-step traces (mean over seeds)")
    return _save(fig, path)


def memory_profile(steps: np.ndarray, lr: np.ndarray, decay: np.ndarray) -> tuple[np.ndarray, float]:
    """Weight w_j = η_j ∏_{i>j}(1 − d_i) of step j's update in the final parameters (d = the
    per-step multiplicative decay actually applied), and the weight left on the initialization.
    Values logged every few steps are held constant until the next logged step."""
    full_steps = np.arange(1, int(steps.max()) + 1)
    idx = np.searchsorted(steps, full_steps, side="right") - 1
    idx = np.clip(idx, 0, len(steps) - 1)
    eta, d = lr[idx], np.clip(decay[idx], 0.0, 1.0)
    keep = np.concatenate([np.cumprod((1.0 - d)[::-1])[::-1][1:], [1.0]])  # ∏_{i>j}(1 − d_i)
    return eta * keep, float(np.prod(1.0 - d))


@dataclass
class MemoryCurve:
    """One arm's (or swept value's) memory profile per epoch and weight RMS over steps."""

    label: str
    share: pd.Series  # epoch -> share of the final weights
    rms_x: np.ndarray
    rms: np.ndarray
    predicted: np.ndarray | None  # √(η/2λ) at the RMS steps, where any is finite


def memory_and_rms(
    evidence: pd.DataFrame, swept: tuple[str, ...] = ("regularizer.weight_decay",)
) -> tuple[list[MemoryCurve], list[list[object]], list[str]]:
    """Memory profile per epoch and measured vs predicted weight RMS (seed 002's checks), per
    arm and per swept value of a sweep arm: the curves, the table rows, and notes saying which
    sweep arms were cut down."""
    lr_all, dec_all = _series(evidence, "step", "lr"), _series(evidence, "step", "decay")
    if lr_all.empty or dec_all.empty:
        return [], [], []
    spe = _series(evidence, "param", "derived.steps_per_epoch")
    rms_all = _series(evidence, "step", "weight_rms")
    # Each series split by run once (a filter of the whole series per run cost ~0.2 s a table).
    lr_of, dec_of, rms_of, spe_of = (_by_run(s) for s in (lr_all, dec_all, rms_all, spe))
    shown, notes = shown_runs(evidence, swept, lr_all["run_id"].unique())
    curves: list[MemoryCurve] = []
    rows_out: list[list[object]] = []
    for label, run_id in shown:
        lr, dec = lr_of(run_id).sort_values("x"), dec_of(run_id).sort_values("x")
        if lr.empty or dec.empty:
            continue
        weights, init_weight = memory_profile(
            lr["x"].to_numpy(), lr["value"].to_numpy(), dec["value"].to_numpy()
        )
        steps_per_epoch = spe_of(run_id)["value"]
        per_epoch = int(steps_per_epoch.iloc[0]) if not steps_per_epoch.empty else max(1, len(weights) // 10)
        epochs = np.arange(len(weights)) // per_epoch + 1
        share = pd.Series(weights).groupby(epochs).sum()
        share = share / share.sum()
        flatness = float(share.max() / share.min()) if share.min() > 0 else math.inf
        rms = rms_of(run_id).sort_values("x")
        final_pred, predicted = math.nan, None
        if not rms.empty:
            merged = pd.merge_asof(rms[["x"]], lr[["x", "value"]].rename(columns={"value": "lr"}), on="x")
            merged = pd.merge_asof(merged, dec[["x", "value"]].rename(columns={"value": "d"}), on="x")
            pred = np.where(
                merged["d"] > 0, merged["lr"] / np.sqrt(2 * merged["d"].clip(lower=1e-300)), np.nan
            )
            if np.isfinite(pred).any():
                predicted, final_pred = pred, float(pred[-1])
        measured = float(rms["value"].iloc[-1]) if not rms.empty else math.nan
        curves.append(MemoryCurve(label, share, rms["x"].to_numpy(), rms["value"].to_numpy(), predicted))
        rows_out.append([label, init_weight, flatness, measured, final_pred])
    return curves, rows_out, notes


def _by_run(series: pd.DataFrame) -> Callable[[str], pd.DataFrame]:
    """run_id -> that run's rows of ``series`` (empty for a run without any)."""
    positions = series.groupby("run_id", sort=False).indices
    empty = np.array([], dtype=int)
    return lambda run_id: series.iloc[positions.get(run_id, empty)]


def plot_memory_and_rms(curves: list[MemoryCurve], path: Path) -> str | None:
    """The memory profiles and weight RMS curves of `memory_and_rms`, side by side."""
    if not curves:
        return None
    many = len(curves) > 6  # a sweep arm's values: more colours, legends beside the axes
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 4.8) if many else (11, 4.2))
    if many:
        for ax in (ax1, ax2):
            ax.set_prop_cycle(color=plt.cm.tab20(np.arange(20)))
    for curve in curves:
        ax1.plot(curve.share.index, curve.share.values, marker="o", ms=3, label=curve.label)
        if len(curve.rms):
            (line,) = ax2.plot(curve.rms_x, curve.rms, lw=1, label=f"{curve.label} measured")
            if curve.predicted is not None:
                label = f"{curve.label} √(η/2λ)"
                ax2.plot(curve.rms_x, curve.predicted, lw=1, ls="--", color=line.get_color(), label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("share of the final weights")
    ax1.set_title("memory profile: how much each epoch's updates remain")
    beside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if many else {}
    ax1.legend(fontsize=6, **beside)
    ax2.set_xlabel("step")
    ax2.set_ylabel("weight RMS (hidden matrices)")
    ax2.set_yscale("log")
    ax2.set_title("measured vs predicted equilibrium weight RMS")
    ax2.legend(fontsize=6, **beside)
    return _save(fig, path)


def plot_sensitivity(adr: Adr, evidence: pd.DataFrame, path: Path) -> str | None:
    spreads = [c for c in adr.criteria if c.statistic.name == "spread"]
    if not spreads:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn = False
    for crit in spreads:
        over = str(crit.statistic.params["over"])
        swept, metric_rows = _series(evidence, "param", over), _series(evidence, "epoch", crit.metric)
        for arm in crit.arms:
            params = swept[swept["arm"] == arm].set_index("run_id")["value"]
            metric = metric_rows[metric_rows["arm"] == arm]
            best = metric.groupby("run_id")["value"].min()
            joined = pd.concat([params.rename("p"), best.rename("v")], axis=1).dropna()
            if joined.empty:
                continue
            mean = joined.groupby("p")["v"].mean()
            ax.plot(mean.index, mean.values, marker="o", label=f"{arm}: best {crit.metric}")
            ax.scatter(joined["p"], joined["v"], s=10, alpha=0.5)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("swept λ")
    ax.set_ylabel("best val PPL")
    ax.set_title("λ sensitivity")
    ax.legend(fontsize=7)
    return _save(fig, path)


def epoch_table(evidence: pd.DataFrame, metric: str = "val_ppl") -> str:
    data = _series(evidence, "epoch", metric)
    if data.empty:
        return ""
    table = data.groupby(["arm", "x"])["value"].mean().unstack("x")
    headers = ["arm", *[f"ep {int(x)}" for x in table.columns]]
    rows = [[arm, *table.loc[arm].tolist()] for arm in table.index]
    return markdown_table(headers, rows, floatfmt=".2f")


def derived_table(evidence: pd.DataFrame, swept: tuple[str, ...] = ("regularizer.weight_decay",)) -> str:
    """The derived decay figures of each arm, and of each swept value of a sweep arm."""
    keys = [
        "derived.lambda",
        "derived.per_step_decay",
        "derived.tau_iter",
        "derived.tau_epoch",
        "derived.predicted_weight_rms",
    ]
    params = evidence[(evidence["kind"] == "param") & (evidence["metric"].isin(keys))]
    if params.empty:
        return ""
    shown, notes = shown_runs(evidence, swept, params["run_id"].unique())
    table = params.groupby(["run_id", "metric"])["value"].first().unstack("metric").reindex(columns=keys)
    rows = [[label, *table.loc[run_id].tolist()] for label, run_id in shown]
    headers = ["arm", "λ", "per-step decay", "τ_iter (steps)", "τ_epoch", "√(η/2λ)"]
    return "\n\n".join([markdown_table(headers, rows, ".4g"), *[f"{note}." for note in notes]])


# --------------------------------------------------------------------------- one ADR


def write_plots(adr: Adr, item: ScaleEvidence, out: Path) -> list[str]:
    """Every plot of one scale (names carry the scale, smoke keeps the plain names)."""
    out.mkdir(parents=True, exist_ok=True)
    ev, scale = item.evidence, item.scale
    floor = _series(ev, "param", "derived.entropy_floor_ppl")["value"]
    floor_ppl = float(floor.iloc[0]) if not floor.empty else None
    plots = [
        plot_epoch_metric(ev, "val_ppl", out / plot_name("val_ppl", scale), floor_ppl, swept_params(adr)),
        plot_step_traces(ev, ["grad_norm", "energy_mean"], out / plot_name("traces", scale)),
        plot_sensitivity(adr, ev, out / plot_name("sensitivity", scale)),
        plot_memory_and_rms(memory_of(adr, item)[0], out / plot_name("memory", scale)),
        plot_forest(item.verdict, out / plot_name("forest", scale)) if item.verdict else None,
    ]  # fmt: skip
    return [p for p in plots if p]


def _scale_sections(adr: Adr, item: ScaleEvidence) -> list[str]:
    ev = item.evidence
    lines = [f"## Scale `{item.scale}`", ""]
    table = epoch_table(ev)
    if table:
        lines += ["### Val PPL per epoch (mean over seeds)", "", table, ""]
    derived = derived_table(ev, swept_params(adr))
    if derived:
        lines += ["### Decay per arm (derived at build time)", "", derived, ""]
    costs = cost_table(ev)
    if costs:
        lines += ["### Cost next to quality (per arm)", "", costs, "", COST_NOTE, ""]
    _, memory_rows, memory_notes = memory_of(adr, item)
    if memory_rows:
        headers = [
            "arm",
            "weight left on init",
            "max/min epoch share",
            "final weight RMS",
            "predicted √(η/2λ)",
        ]
        lines += [
            "### Memory profile and weight RMS",
            "",
            markdown_table(headers, memory_rows, ".3g"),
            "",
            *[f"{note}." for note in memory_notes],
            *([""] if memory_notes else []),
            "A flat profile (max/min share near 1) means every epoch's updates weigh the same in the final "
            "weights (seed 002); the predicted RMS is η_t/√(2·d_t) with d_t the per-step decay actually "
            "applied.",
            "",
        ]
    lines += mlflow_section(ev)
    out = adr_report_dir(adr)
    for base in PLOT_BASES:
        name = plot_name(base, item.scale)
        if (out / name).is_file():
            lines += [f"![{name}]({name})", ""]
    return lines


def mlflow_section(evidence: pd.DataFrame) -> list[str]:
    """Each arm's runs, linked to their pages in `mlflow ui`'s training view. A run the store
    does not hold (evidence from a committed snapshot) gets MLflow's /runs/<id> route, which
    finds the run wherever it is stored but opens it under GenAI's navigation."""
    runs = evidence[["arm", "seed", "run_id"]].drop_duplicates().astype({"run_id": str})
    if runs.empty:
        return []
    uri = tracking.tracking_uri(None)
    found = tracking.run_urls(uri, runs["run_id"])
    url = {r: found.get(r) or tracking.ui_url(uri, run_id=r) for r in runs["run_id"]}
    rows = []
    for arm, group in runs.sort_values(["arm", "seed", "run_id"]).groupby("arm", sort=True):
        several = group["seed"].duplicated(keep=False).any()  # a sweep arm: many runs per seed
        links = [
            f"[{r.run_id[:8] if several else f's{r.seed}'}]({url[r.run_id]})" for r in group.itertuples()
        ]
        shown = " · ".join(links[:12]) + (f" · +{len(links) - 12} more" if len(links) > 12 else "")
        rows.append([arm, len(links), shown])
    intro = "Each run's page in `mlflow ui` (`make ui`; the store that holds these runs)."
    return [
        "### Runs in MLflow",
        "",
        intro,
        "",
        markdown_table(["arm", "runs", "open in mlflow ui"], rows),
        "",
    ]


def write_adr_report(adr: Adr, judged: list[ScaleEvidence], block: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# ADR-{adr.number}: report",
        "",
        f"[{adr.path.name}](../../adr/{adr.path.name}) — {adr.title}",
        "",
    ]
    lines += [block.strip(), ""]
    history = history_markdown(out / HISTORY)
    if history:
        lines += [
            "## Verdict history",
            "",
            f"Every change of a verdict ([{HISTORY}]({HISTORY})).",
            "",
            history,
            "",
        ]
    for item in judged:
        lines += _scale_sections(adr, item)
    text = "\n".join(lines)
    readme = out / "README.md"
    if not readme.is_file() or readme.read_text() != text:
        readme.write_text(text)


SNAPSHOT = "runs-{scale}.csv"
LEGACY_SNAPSHOT = "runs.csv"  # written before evidence had a scale: smoke


def snapshot_path(out: Path, scale: str) -> Path:
    """The committed evidence of one scale; the legacy runs.csv still loads as smoke."""
    path = out / SNAPSHOT.format(scale=scale)
    legacy = out / LEGACY_SNAPSHOT
    return legacy if scale == "smoke" and not path.is_file() and legacy.is_file() else path


def plot_name(base: str, scale: str) -> str:
    return f"{base}.png" if scale == "smoke" else f"{base}-{scale}.png"


def vocab_size(adr: Adr, scale: str, evidence: pd.DataFrame) -> float | None:
    """The uniform PPL for the learning guard: the logged param, else the ADR's config."""
    if not _series(evidence, "param", "data.vocab_size").empty:
        return None  # the evidence carries it
    cfg = compose(list(experiment_at(adr, scale).overrides), config_dirs=adr_config_dirs(adr))
    return float(cfg.data.vocab_size) if cfg.data.get("vocab_size") else None


@dataclass
class ScaleEvidence:
    scale: str
    evidence: pd.DataFrame
    source: str  # store | snapshot | none
    verdict: AdrVerdict | None = None
    memory: tuple[list[MemoryCurve], list[list[object]], list[str]] | None = None  # see memory_of


def memory_of(adr: Adr, item: ScaleEvidence) -> tuple[list[MemoryCurve], list[list[object]], list[str]]:
    """`memory_and_rms` of one scale, computed once: its plot and the report's table share it."""
    if item.memory is None:
        item.memory = memory_and_rms(item.evidence, swept_params(adr))
    return item.memory


def gather(adr: Adr, scale: str, uri: str) -> list[ScaleEvidence]:
    """Evidence per declared scale: the store for ``scale`` (the one being refreshed), else
    that scale's own snapshot; judged only from its own rows."""
    out_dir = adr_report_dir(adr)
    found = []
    for s in adr.experiments:
        evidence, source = (
            (collect_evidence(adr, s, uri), "store") if s == scale else (pd.DataFrame(), "none")
        )
        if evidence.empty:
            path = snapshot_path(out_dir, s)
            evidence, source = (load_evidence(path, s), "snapshot") if path.is_file() else (evidence, "none")
        item = ScaleEvidence(s, evidence, source)
        if not evidence.empty:
            item.verdict = evaluate(adr, evidence, s, vocab_size=vocab_size(adr, s, evidence))
        found.append(item)
    return found


def section_context(adr: Adr, item: ScaleEvidence) -> dict[str, object]:
    rel = f"../reports/adr-{adr.number}"
    out = adr_report_dir(adr)
    if item.verdict is None:
        exp = experiment_at(adr, item.scale)
        missing = ", ".join(f"{arm} seed {seed}" for arm in exp.arms for seed in exp.seeds)
        why = f"no runs in this store and no reports/adr-{adr.number}/{SNAPSHOT.format(scale=item.scale)}"
        return {"scale": item.scale, "missing": f"{why}; missing: {missing}"}
    plots = [plot_name(b, item.scale) for b in PLOT_BASES if (out / plot_name(b, item.scale)).is_file()]
    return {
        "scale": item.scale,
        "data": data_description(adr, item.scale),
        "evidence_date": evidence_date(item.evidence) or "no runs",
        "evidence": f"{rel}/{snapshot_path(out, item.scale).name}",
        "plots": [f"{rel}/{p}" for p in plots],
    }


def report_one(path: Path, *, scale: str, check: bool, force: bool, uri: str) -> AdrOutcome:
    adr = parse_adr(path)

    def outcome(verdict, source: str, write: str, message: str, date: str = "") -> AdrOutcome:
        return AdrOutcome(
            path, adr.number or "?", adr.title, adr.status, verdict, source, write, message, date
        )

    if not adr.criteria:
        return outcome(None, "none", "skipped", "no machine criteria (see `adrlab adr lint`)")
    if scale not in adr.experiments:
        return outcome(None, "none", "skipped", f"no experiments at scale {scale}")
    out = adr_report_dir(adr)
    items = gather(adr, scale, uri)
    judged = [i for i in items if i.verdict is not None]
    if not check:
        for item in judged:
            if item.source == "store":
                save_evidence(item.evidence, out / SNAPSHOT.format(scale=item.scale))
                if item.scale == "smoke":
                    (out / LEGACY_SNAPSHOT).unlink(missing_ok=True)
            write_plots(adr, item, out)  # plots first: the block links them
    block = render_block([(i.verdict, section_context(adr, i)) for i in items])
    headline = judged[-1] if judged else next(i for i in items if i.scale == scale)
    date = evidence_date(headline.evidence) if judged else ""
    if not judged and find_block(adr.text, path) is not None:
        kept = "no runs in this store and no snapshot: the committed block is kept"
        return outcome(headline.verdict, "none", "kept", kept, date)
    if not check:
        append_history(out / HISTORY, [i.verdict for i in judged], adr.text)
    status = headline.verdict.recommended_status if headline.verdict else None
    result = write_verdict(path, block, check=check, force=force, status=status)
    if not check and judged:
        write_adr_report(adr, judged, block, out)  # the report embeds the final block
    return outcome(
        headline.verdict, _sources(items), result.status, _message(adr, items, scale, result.message), date
    )


def _sources(items: list[ScaleEvidence]) -> str:
    return ", ".join(f"{i.scale}: {i.source}" for i in items)


def _message(adr: Adr, items: list[ScaleEvidence], scale: str, status: str) -> str:
    parts = []
    for i in items:
        if i.verdict is None:
            parts.append(f"{i.scale}: NO DATA (no runs of this scale)")
        elif i.source == "snapshot":
            name = snapshot_path(adr_report_dir(adr), i.scale).name
            parts.append(f"{i.scale}: re-derived from reports/adr-{adr.number}/{name}")
        else:
            parts.append(f"{i.scale}: from the store")
    return f"{status}; " + "; ".join(parts)


def write_index(outcomes: list[AdrOutcome]) -> Path:
    rows = []
    for o in sorted(outcomes, key=lambda o: o.number):
        v = o.verdict
        summary = ", ".join(f"{n} {k}" for k, n in v.counts.items() if n) if v else o.message
        rows.append(
            [
                f"[ADR-{o.number}](../adr/{o.path.name})",
                o.title.split(":", 1)[-1].strip(),
                o.status,
                v.recommended_status if v else "",
                summary,
                o.evidence_date,
                f"[report](adr-{o.number}/README.md)"
                if (reports_dir() / f"adr-{o.number}" / "README.md").is_file()
                else "",
            ]
        )
    text = "\n".join(
        [
            "# ADR status",
            "",
            "Generated by `adrlab report` from the stored runs (or the committed `runs.csv` snapshots).",
            "",
            markdown_table(
                ["ADR", "title", "status", "recommended", "verdicts", "last verified (newest run)", ""], rows
            ),
            "",
        ]
    )
    path = reports_dir() / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def run_report(
    adr_ref: str | None = None, *, scale: str = "smoke", check: bool = False, force: bool = False
) -> int:
    """Exit code: 0 fine; 1 a block is stale or hand-edited (check) / refused; 2 a malformed ADR."""
    uri = tracking.tracking_uri(None)
    paths = [find_adr(adr_ref)] if adr_ref else all_adr_paths()
    outcomes: list[AdrOutcome] = []
    code = 0
    for path in paths:
        try:
            outcome = report_one(path, scale=scale, check=check, force=force, uri=uri)
        except EditedBlockError as exc:
            print(f"adrlab: refused: {exc} (use --force to overwrite it)", file=sys.stderr)
            code = max(code, 1)
            continue
        except AdrError as exc:
            print(f"adrlab: error: {exc}", file=sys.stderr)
            code = max(code, 2)
            continue
        outcomes.append(outcome)
        flag = {"stale": "STALE", "refused-edited": "EDITED"}.get(outcome.write, outcome.write)
        print(f"ADR-{outcome.number} [{outcome.source}] {flag}: {outcome.message}".rstrip(": "))
        if outcome.write in ("stale", "refused-edited"):
            code = max(code, 1)
    if not check and not adr_ref:
        print(f"wrote {write_index(outcomes)}")
    return code


def print_verdict_diff(ref: str) -> int:
    """`adrlab report --diff REF`: verdict changes since a git ref, as markdown on stdout."""
    try:
        print(verdict_diff(ref, all_adr_paths(), project_root()), end="")
    except (ValueError, AdrError) as exc:
        print(f"adrlab: error: {exc}", file=sys.stderr)
        return 2
    return 0
