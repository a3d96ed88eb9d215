"""The metrics adrlab logs, in one place: what `adrlab.train` writes to the tracking store.

ADR criteria may only name these (``adr lint`` refuses others, so a misspelled metric cannot
silently become NO DATA), and the evidence export reads exactly these back. A test trains a
tiny run and checks that every logged key is listed here.
"""

from __future__ import annotations

# Per epoch (x = epoch).
EPOCH_METRICS: tuple[str, ...] = (
    "val_ppl",
    "val_loss",
    "train_loss_epoch",
    "epoch_time",
    "weight_rms_epoch",
    # Cost per epoch (adrlab.cost): step time and the optimizer's share timed on logging steps.
    "optimizer_step_share",
    "step_time_ms",
    "peak_memory_mb",
)
# Per logged step (x = global step); lr_adamw / wd_adamw only when the AdamW group differs,
# energy_* only for the RMSuon family.
STEP_METRICS: tuple[str, ...] = (
    "train_loss",
    "grad_norm",
    "weight_rms",
    "tokens_per_s",
    "decay",
    "lr",
    "wd",
    "lr_adamw",
    "wd_adamw",
    "update_rms",
    "energy_mean",
    "energy_max",
    # Only with trainer.eval_every_steps > 0: validation every N steps (x = global step).
    "val_loss_step",
    "val_ppl_step",
)
LOGGED_METRICS: tuple[str, ...] = (*EPOCH_METRICS, *STEP_METRICS)
# Statistics whose per-run value can change sign: a ratio of two of them can invert the claim.
SIGNED_STATISTICS: tuple[str, ...] = ("slope",)
# Params every run logs as numbers (the resolved config flattened, plus the build-time derived.*
# values of adrlab.train.build): a criterion may measure its statistic relative to one of them
# (statistic `relative_to`, adr/README.md), and the evidence export reads them back (adr.runs.PARAMS,
# all but the run sizes). A test trains a tiny run and checks each is numeric.
NUMERIC_PARAMS: tuple[str, ...] = (
    "optimizer.lr",
    "regularizer.weight_decay",
    "data.vocab_size",
    "data.seq_len",
    "trainer.batch_size",
    "trainer.epochs",
    "derived.lambda",
    "derived.per_step_decay",
    "derived.tau_iter",
    "derived.tau_epoch",
    "derived.predicted_weight_rms",
    "derived.steps_per_epoch",
    "derived.entropy_floor_ppl",
    "derived.n_params",
    "derived.n_train_tokens",
    "derived.model_flops_per_step",
    "derived.ns_flops_per_step",
    "derived.ns_flops_ratio",
)
