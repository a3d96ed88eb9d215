"""`adrlab report`: judge each ADR from its evidence, write the verdict block, the report
(reports/adr-NNNN/README.md with plots) and the index (reports/README.md).

Evidence comes from the tracking store when it holds the ADR's runs (and is then exported
to reports/adr-NNNN/runs.csv); otherwise from that committed snapshot, so a fresh clone
re-derives and checks every committed verdict.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from adrlab import tracking
from adrlab.adr.document import Adr, AdrError, parse_adr
from adrlab.adr.runs import all_adr_paths, collect_evidence, experiment_at, find_adr
from adrlab.adr.verdict import AdrVerdict, evaluate, load_evidence, save_evidence
from adrlab.adr.workspace import activate
from adrlab.adr.writeback import EditedBlockError, find_block, render_block, write_verdict
from adrlab.config import compose, reports_root
from adrlab.mdtable import markdown_table

PNG_META = {"Software": None}  # no library version in the file: re-rendering stays byte-stable


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
    exp = experiment_at(adr, scale)
    cfg = compose(list(exp.overrides))
    text = (
        f"{cfg.data.name} data, {cfg.model.name} model ({cfg.model.d_model}d × {cfg.model.n_layers} layers), "
    )
    text += f"{cfg.trainer.epochs} epochs, seeds {list(exp.seeds)}"
    return text


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


def plot_epoch_metric(
    evidence: pd.DataFrame, metric: str, path: Path, floor: float | None = None
) -> str | None:
    data = _series(evidence, "epoch", metric)
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for arm, rows in data.groupby("arm", sort=True):
        table = rows.pivot_table(index="x", columns="run_id", values="value")
        mean = table.mean(axis=1)
        (line,) = ax.plot(mean.index, mean.values, marker="o", ms=3, label=f"{arm} (n={table.shape[1]})")
        if table.shape[1] > 1:
            ax.fill_between(
                table.index, table.min(axis=1), table.max(axis=1), color=line.get_color(), alpha=0.15
            )
    if floor:
        ax.axhline(floor, color="grey", ls=":", lw=1, label=f"entropy floor {floor:.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_yscale("log")
    ax.set_title(f"{metric} per arm (mean, band = min–max over seeds)")
    ax.legend(fontsize=7)
    return _save(fig, path)


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


def plot_memory_and_rms(evidence: pd.DataFrame, path: Path) -> tuple[str | None, list[list[object]]]:
    """Memory profile per epoch and measured vs predicted weight RMS (seed 002's checks)."""
    lr_all, dec_all = _series(evidence, "step", "lr"), _series(evidence, "step", "decay")
    if lr_all.empty or dec_all.empty:
        return None, []
    spe = evidence[(evidence["kind"] == "param") & (evidence["metric"] == "derived.steps_per_epoch")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows_out: list[list[object]] = []
    for arm in sorted(lr_all["arm"].unique()):
        run_id = sorted(lr_all[lr_all["arm"] == arm]["run_id"].unique())[
            0
        ]  # one seed is enough: η, λ are fixed
        lr = lr_all[lr_all["run_id"] == run_id].sort_values("x")
        dec = dec_all[dec_all["run_id"] == run_id].sort_values("x")
        if lr.empty or dec.empty:
            continue
        weights, init_weight = memory_profile(
            lr["x"].to_numpy(), lr["value"].to_numpy(), dec["value"].to_numpy()
        )
        steps_per_epoch = spe[spe["run_id"] == run_id]["value"]
        per_epoch = int(steps_per_epoch.iloc[0]) if not steps_per_epoch.empty else max(1, len(weights) // 10)
        epochs = np.arange(len(weights)) // per_epoch + 1
        share = pd.Series(weights).groupby(epochs).sum()
        share = share / share.sum()
        ax1.plot(share.index, share.values, marker="o", ms=3, label=arm)
        flatness = float(share.max() / share.min()) if share.min() > 0 else math.inf
        rms = _series(evidence, "step", "weight_rms")
        rms = rms[rms["run_id"] == run_id].sort_values("x")
        final_pred = math.nan
        if not rms.empty:
            (line,) = ax2.plot(rms["x"], rms["value"], lw=1, label=f"{arm} measured")
            merged = pd.merge_asof(rms[["x"]], lr[["x", "value"]].rename(columns={"value": "lr"}), on="x")
            merged = pd.merge_asof(merged, dec[["x", "value"]].rename(columns={"value": "d"}), on="x")
            pred = np.where(
                merged["d"] > 0, merged["lr"] / np.sqrt(2 * merged["d"].clip(lower=1e-300)), np.nan
            )
            if np.isfinite(pred).any():
                ax2.plot(rms["x"], pred, lw=1, ls="--", color=line.get_color(), label=f"{arm} √(η/2λ)")
                final_pred = float(pred[-1])
        measured = float(rms["value"].iloc[-1]) if not rms.empty else math.nan
        rows_out.append([arm, init_weight, flatness, measured, final_pred])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("share of the final weights")
    ax1.set_title("memory profile: how much each epoch's updates remain")
    ax1.legend(fontsize=6)
    ax2.set_xlabel("step")
    ax2.set_ylabel("weight RMS (hidden matrices)")
    ax2.set_yscale("log")
    ax2.set_title("measured vs predicted equilibrium weight RMS")
    ax2.legend(fontsize=6)
    return _save(fig, path), rows_out


def plot_sensitivity(adr: Adr, evidence: pd.DataFrame, path: Path) -> str | None:
    spreads = [c for c in adr.criteria if c.statistic.name == "spread"]
    if not spreads:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn = False
    for crit in spreads:
        over = str(crit.statistic.params["over"])
        for arm in crit.arms:
            rows = evidence[evidence["arm"] == arm]
            params = rows[(rows["kind"] == "param") & (rows["metric"] == over)].set_index("run_id")["value"]
            metric = rows[(rows["kind"] == "epoch") & (rows["metric"] == crit.metric)]
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


def derived_table(evidence: pd.DataFrame) -> str:
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
    table = params.groupby(["arm", "metric"])["value"].first().unstack("metric").reindex(columns=keys)
    rows = [[arm, *table.loc[arm].tolist()] for arm in table.index]
    return markdown_table(["arm", "λ", "per-step decay", "τ_iter (steps)", "τ_epoch", "√(η/2λ)"], rows, ".4g")


# --------------------------------------------------------------------------- one ADR


def write_adr_report(
    adr: Adr, verdict: AdrVerdict, evidence: pd.DataFrame, block: str, out: Path
) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    floor = _series(evidence, "param", "derived.entropy_floor_ppl")["value"]
    plots = [
        plot_epoch_metric(
            evidence, "val_ppl", out / "val_ppl.png", float(floor.iloc[0]) if not floor.empty else None
        ),
        plot_step_traces(evidence, ["grad_norm", "energy_mean"], out / "traces.png"),
        plot_sensitivity(adr, evidence, out / "sensitivity.png"),
    ]
    memory_png, memory_rows = plot_memory_and_rms(evidence, out / "memory.png")
    plots.append(memory_png)
    plots = [p for p in plots if p]
    lines = [
        f"# ADR-{adr.number}: report",
        "",
        f"[{adr.path.name}](../../adr/{adr.path.name}) — {adr.title}",
        "",
    ]
    lines += [block.strip(), ""]
    table = epoch_table(evidence)
    if table:
        lines += ["## Val PPL per epoch (mean over seeds)", "", table, ""]
    derived = derived_table(evidence)
    if derived:
        lines += ["## Decay per arm (derived at build time)", "", derived, ""]
    if memory_rows:
        lines += [
            "## Memory profile and weight RMS",
            "",
            markdown_table(
                [
                    "arm",
                    "weight left on init",
                    "max/min epoch share",
                    "final weight RMS",
                    "predicted √(η/2λ)",
                ],
                memory_rows,
                ".3g",
            ),
            "",
            "A flat profile (max/min share near 1) means every epoch's updates weigh the same in the final "
            "weights (seed 002); the predicted RMS is η_t/√(2·d_t) with d_t the per-step decay actually "
            "applied.",
            "",
        ]
    for png in plots:
        lines += [f"![{png}]({png})", ""]
    (out / "README.md").write_text("\n".join(lines))
    return plots


def report_one(path: Path, *, scale: str, check: bool, force: bool, uri: str) -> AdrOutcome:
    adr = parse_adr(path)
    activate(adr)  # its config folders, for composing; report never imports a `_target_`

    def outcome(verdict, source: str, write: str, message: str, date: str = "") -> AdrOutcome:
        return AdrOutcome(
            path, adr.number or "?", adr.title, adr.status, verdict, source, write, message, date
        )

    if not adr.criteria:
        return outcome(None, "none", "skipped", "no machine criteria (see `adrlab adr lint`)")
    if scale not in adr.experiments:
        return outcome(None, "none", "skipped", f"no experiments at scale {scale}")
    out = adr_report_dir(adr)
    snapshot = out / "runs.csv"
    evidence = collect_evidence(adr, scale, uri)
    source = "store"
    if evidence.empty:
        if snapshot.is_file():
            evidence, source = load_evidence(snapshot), "snapshot"
        else:
            source = "none"
    verdict = evaluate(adr, evidence, scale)
    date = evidence_date(evidence) if not evidence.empty else ""
    if source == "store" and not check:
        save_evidence(evidence, snapshot)
        write_adr_report(adr, verdict, evidence, "", out)  # plots first: the block links them
    plots = [p.name for p in sorted(out.glob("*.png"))]
    context = {
        "scale": scale,
        "data": data_description(adr, scale),
        "evidence_date": date or "no runs",
        "evidence": f"../reports/adr-{adr.number}/runs.csv",
        "plots": [f"../reports/adr-{adr.number}/{p}" for p in plots],
    }
    block = render_block(verdict, context)
    if source == "none" and find_block(adr.text, path) is not None:
        kept = "no runs in this store and no snapshot: the committed block is kept"
        return outcome(verdict, source, "kept", kept, date)
    result = write_verdict(path, block, check=check, force=force)
    if source == "store" and not check:
        write_adr_report(adr, verdict, evidence, block, out)  # the report embeds the final block
    message = result.message
    if source == "snapshot":
        message = (
            f"runs not in this store: verdicts re-derived from reports/adr-{adr.number}/runs.csv "
            f"({result.status})"
        )
    return outcome(verdict, source, result.status, message, date)


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
