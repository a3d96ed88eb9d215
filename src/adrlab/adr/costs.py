"""Cost next to quality in an ADR report: per arm, what a run bought (best val PPL) and what it
paid (wall clock per epoch, the optimizer step's share of a step, the structured update's
Newton–Schulz FLOPs against the model's forward + backward FLOPs, peak memory), from the
evidence table (see adrlab.cost for how each is measured)."""

from __future__ import annotations

import pandas as pd

from adrlab.mdtable import markdown_table

COST_EPOCH_METRICS = ("epoch_time", "optimizer_step_share", "step_time_ms", "peak_memory_mb")
COST_NOTE = (
    "Compare arms by wall clock as well as by epoch: a Muon-family step does more work than "
    "AdamW's (Newton–Schulz), so equal epochs are not equal time. Step time and the optimizer "
    "share are timed on logging steps; peak memory is the process's peak RSS on CPU."
)
HEADERS = [
    "arm",
    "runs",
    "best val PPL (median)",
    "s / epoch (median)",
    "optimizer step share",
    "ms / step",
    "NS FLOPs / model fwd+bwd FLOPs",
    "peak memory (MB)",
]


def _per_run(evidence: pd.DataFrame, kind: str, metric: str, how: str) -> pd.DataFrame:
    rows = evidence[(evidence["kind"] == kind) & (evidence["metric"] == metric)]
    return rows.groupby(["arm", "run_id"])["value"].agg(how).rename(metric).reset_index()


def cost_table(evidence: pd.DataFrame) -> str:
    """One row per arm (medians over its runs; peak memory is the largest); "" without runs.
    Runs logged before cost accounting existed show blanks, not zeros."""
    if evidence.empty or not (evidence["metric"] == "val_ppl").any():
        return ""
    columns = [
        _per_run(evidence, "epoch", "val_ppl", "min"),
        *[_per_run(evidence, "epoch", m, "mean") for m in COST_EPOCH_METRICS if m != "peak_memory_mb"],
        _per_run(evidence, "epoch", "peak_memory_mb", "max"),
        _per_run(evidence, "param", "derived.ns_flops_ratio", "first"),
    ]
    table = columns[0]
    for frame in columns[1:]:
        table = table.merge(frame, on=["arm", "run_id"], how="left")
    agg = {c: "median" for c in table.columns if c not in ("arm", "run_id", "peak_memory_mb")}
    by_arm = table.groupby("arm").agg({**agg, "peak_memory_mb": "max", "run_id": "count"})
    rows = [
        [
            arm,
            int(r["run_id"]),
            r["val_ppl"],
            r["epoch_time"],
            "" if pd.isna(r["optimizer_step_share"]) else f"{r['optimizer_step_share']:.1%}",
            r["step_time_ms"],
            "" if pd.isna(r["derived.ns_flops_ratio"]) else f"{r['derived.ns_flops_ratio']:.2f}×",
            r["peak_memory_mb"],
        ]
        for arm, r in by_arm.iterrows()
    ]
    rows = [["" if isinstance(v, float) and pd.isna(v) else v for v in row] for row in rows]
    return markdown_table(HEADERS, rows, ".4g")
