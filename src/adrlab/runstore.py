"""Which run to continue or reuse, and the checkpoints that make a killed run resumable.

Lookups read MLflow through `adrlab.tracking` (the one read path); checkpoints live beside
the embedded store in `runs/checkpoints/<run_id>/last.pt`, or under `trainer.checkpoint_dir`
(a folder every node of a multi-node sweep shares).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from adrlab import tracking
from adrlab.config import project_root
from adrlab.provenance import TAG_CODE_HASH

EPOCH_METRICS = ["val_loss", "val_ppl", "train_loss_epoch", "epoch_time", "weight_rms_epoch"]


def checkpoint_path(cfg: DictConfig, run_id: str) -> Path:
    """`trainer.checkpoint_dir` (relative to the project root; on a filesystem every node shares,
    a trial retried on another node resumes from it), else <runs_dir>/checkpoints."""
    root = cfg.trainer.get("checkpoint_dir")
    if not root:
        return tracking.runs_dir(cfg) / "checkpoints" / run_id / "last.pt"
    path = Path(str(root)).expanduser()
    return (path if path.is_absolute() else project_root() / path) / run_id / "last.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-save never leaves a torn checkpoint


def load_checkpoint(cfg: DictConfig, run_id: str, chash: str, device: torch.device) -> dict[str, Any]:
    """The checkpoint of `run_id`, refused unless it was written by the same config."""
    path = checkpoint_path(cfg, run_id)
    if not path.is_file():
        raise RuntimeError(f"cannot resume run {run_id}: no checkpoint at {path}")
    state = torch.load(path, map_location=device, weights_only=False)
    if state["config_hash"] != chash:
        raise RuntimeError(
            f"cannot resume run {run_id}: its config hash {state['config_hash']} differs from {chash}; "
            "pass the same overrides as the original run"
        )
    return state


def find_resumable(uri: str, experiment: str, chash: str, cfg: DictConfig) -> str | None:
    """The newest unfinished run with this config hash that left a checkpoint."""
    runs = tracking.search_runs(uri, [experiment], f"tags.`{tracking.TAG_CONFIG_HASH}` = '{chash}'")
    if runs.empty:
        return None
    runs = runs[runs["status"] != "FINISHED"].sort_values("start_time", ascending=False)
    for run_id in runs["run_id"]:
        if checkpoint_path(cfg, run_id).is_file():
            return str(run_id)
    return None


def find_reusable(uri: str, chash: str, code_hash: str | None = None) -> str | None:
    """A FINISHED, complete run with this config hash (and training code hash, when given:
    changed training code trains again) in any experiment of the store."""
    same_code = f" and tags.`{TAG_CODE_HASH}` = '{code_hash}'" if code_hash else ""
    runs = tracking.search_runs(
        uri,
        None,
        f"tags.`{tracking.TAG_CONFIG_HASH}` = '{chash}' and tags.`{tracking.TAG_STATE}` = 'COMPLETE'"
        + same_code,
        statuses=["FINISHED"],
    )
    if runs.empty:
        return None
    # Never reuse a run that was itself a cache hit: point at the run that trained.
    if f"tags.{tracking.TAG_REUSED_FROM}" in runs:
        runs = runs[runs[f"tags.{tracking.TAG_REUSED_FROM}"].isna()]
    return None if runs.empty else str(runs.sort_values("start_time").iloc[0]["run_id"])


def epochs_of(uri: str, run_id: str) -> list[dict[str, float]]:
    """A stored run's per-epoch metrics, shaped like `RunResult.epochs`."""
    history = tracking.metric_history(uri, run_id, EPOCH_METRICS)
    if history.empty:
        return []
    table = history.pivot_table(index="step", columns="metric", values="value", aggfunc="last")
    return [{"epoch": int(step), **row.dropna().to_dict()} for step, row in table.iterrows()]
