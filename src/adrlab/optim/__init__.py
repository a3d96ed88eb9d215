"""adrlab's optimizers (AdamW, Muon, RMSuon, AdaRMSuon) and the glue from a run config to them.

The training loop uses resolve_decay → build_optimizer → set_step_hyperparams each step,
group_hyperparams and `optimizer.last_stats` for logging, derived_params once per run.
"""

from adrlab.optim.adamw import DECAY_MODES, AdamW, RoutedOptimizer, adamw_update_
from adrlab.optim.muon import (
    NS_COEFFICIENTS,
    NS_SCHEDULES,
    AdaRMSuon,
    Muon,
    RMSuon,
    muon_lr_ratio,
    newton_schulz,
)
from adrlab.optim.routing import (
    OPTIMIZER_CLASSES,
    DecaySpec,
    build_optimizer,
    derived_params,
    group_hyperparams,
    param_group_of,
    resolve_decay,
    route_parameters,
    set_step_hyperparams,
    timescale_lambda,
)

__all__ = [
    "DECAY_MODES",
    "NS_COEFFICIENTS",
    "NS_SCHEDULES",
    "OPTIMIZER_CLASSES",
    "AdaRMSuon",
    "AdamW",
    "DecaySpec",
    "Muon",
    "RMSuon",
    "RoutedOptimizer",
    "adamw_update_",
    "build_optimizer",
    "derived_params",
    "group_hyperparams",
    "muon_lr_ratio",
    "newton_schulz",
    "param_group_of",
    "resolve_decay",
    "route_parameters",
    "set_step_hyperparams",
    "timescale_lambda",
]
