"""From a composed run config to an optimizer: decay resolution, parameter routing, derived values.

Routing is by module role (Transformer.param_roles()), never by shape: hidden matrices go to
the structured group (Muon-family update; plain AdamW for optimizer=adamw), embeddings, an
untied head and every 1-D parameter to AdamW groups. Decay scope is expressed as separate
groups whose initial_weight_decay is 0, so the per-step schedule multiplies 0 and stays 0.

Group roles: "matrix" (hidden matrices), "adamw" (other parameters that decay),
"adamw_nodecay" (other parameters that do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer

from adrlab.config import ConfigError
from adrlab.optim.adamw import AdamW, RoutedOptimizer
from adrlab.optim.muon import AdaRMSuon, Muon, RMSuon

OPTIMIZER_CLASSES: dict[str, type[RoutedOptimizer]] = {
    "adamw": AdamW,
    "muon": Muon,
    "rmsuon": RMSuon,
    "ada_rmsuon": AdaRMSuon,
}
MAIN_ROLE = "matrix"
ADAMW_ROLES = ("adamw", "adamw_nodecay")


@dataclass(frozen=True)
class DecaySpec:
    """The penalty a run applies, in the units the optimizer uses.

    mode: "none" | "l2" | "decoupled" | "per_step" | "sqrt_v"
    lam:  λ_max (timescale: the derived λ* = 1 − ε^(1/S))
    scope: "all" | "no_1d" | "matrices"
    """

    mode: str
    lam: float
    scope: str

    @property
    def active(self) -> bool:
        return self.mode != "none" and self.lam > 0.0


def timescale_lambda(epsilon: float, steps_per_epoch: int) -> float:
    """ADR-0001: the λ that leaves a fraction ε of the weights after one epoch of S steps."""
    # 1 − exp(ln ε / S) via expm1 keeps precision when λ is tiny (large S).
    return -math.expm1(math.log(epsilon) / max(1, steps_per_epoch))


def resolve_decay(cfg: DictConfig, steps_per_epoch: int) -> DecaySpec:
    reg = cfg.regularizer
    name = reg.name
    scope = str(reg.get("scope", "all"))
    if name == "none":
        return DecaySpec("none", 0.0, scope)
    if name in ("l2", "decoupled", "sqrt_v"):
        return DecaySpec(name, float(reg.weight_decay), scope)
    if name == "timescale":
        lam = timescale_lambda(float(reg.epsilon), steps_per_epoch)
        if reg.units == "per_step":
            return DecaySpec("per_step", lam, scope)
        if reg.units == "lr_scaled":
            return DecaySpec("decoupled", lam, scope)
        raise ConfigError(f"regularizer.units={reg.units!r} is not valid; choose one of: per_step, lr_scaled")
    raise ConfigError(
        f"regularizer={name!r} is not known; choose one of: none, l2, decoupled, timescale, sqrt_v"
    )


def _decays(param: nn.Parameter, role: str, scope: str) -> bool:
    if scope == "all":
        return True
    if scope == "no_1d":
        return param.ndim >= 2
    if scope == "matrices":
        return role == "matrix"
    raise ConfigError(f"regularizer.scope={scope!r} is not valid; choose one of: all, no_1d, matrices")


def route_parameters(model: nn.Module, scope: str) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Group role → [(name, parameter)], each trainable parameter exactly once."""
    roles = model.param_roles()  # type: ignore[operator]
    routed: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "adamw": [], "adamw_nodecay": []}
    seen: set[int] = set()
    for name, param in model.named_parameters():  # shared (tied) tensors are listed once
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if name not in roles:
            raise ValueError(f"parameter {name} has no role in model.param_roles()")
        role = roles[name]
        if role == "matrix":
            routed["matrix"].append((name, param))
        elif _decays(param, role, scope):
            routed["adamw"].append((name, param))
        else:
            routed["adamw_nodecay"].append((name, param))
    return routed


def hyperparams_by_role(opt: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hidden matrices, AdamW-routed parameters) group settings from the optimizer config.
    The adamw_* keys override lr/betas/eps for the AdamW side of a structured optimizer."""
    name = opt.name
    structured = name != "adamw"
    betas = tuple(float(b) for b in opt.betas)
    adamw_lr = opt.get("adamw_lr")
    adamw_betas = opt.get("adamw_betas")
    adamw_eps = opt.get("adamw_eps")
    adamw_hp = {
        "lr": float(adamw_lr if adamw_lr is not None else opt.lr),
        "betas": tuple(float(b) for b in adamw_betas) if adamw_betas is not None else betas,
        "eps": float(adamw_eps if adamw_eps is not None else opt.eps),
        "structured": False,
    }
    matrix_hp: dict[str, Any] = {
        "lr": float(opt.lr),
        "betas": betas,
        "eps": float(opt.eps),
        "structured": structured,
    }
    if name == "muon":
        matrix_hp.update(
            momentum=float(opt.momentum), nesterov=bool(opt.nesterov), adjust_lr=str(opt.adjust_lr)
        )
    if structured:
        matrix_hp["ns_steps"] = int(opt.ns_steps)
    if name == "ada_rmsuon":
        matrix_hp["normalize"] = bool(opt.normalize)
    if not structured:
        matrix_hp = {**matrix_hp, **adamw_hp, "lr": float(opt.lr)}  # adamw: one set of hyperparameters
    return matrix_hp, adamw_hp


def build_optimizer(model: nn.Module, cfg: DictConfig, decay: DecaySpec) -> Optimizer:
    opt = cfg.optimizer
    name = opt.name
    if name not in OPTIMIZER_CLASSES:
        raise ConfigError(f"optimizer={name!r} is not known; choose one of: {', '.join(OPTIMIZER_CLASSES)}")
    if decay.mode == "sqrt_v" and name == "muon":
        raise ConfigError(
            "regularizer=sqrt_v penalises λ·√v̂, but optimizer=muon keeps no second moment v̂; "
            "use adamw, rmsuon or ada_rmsuon, or another regularizer"
        )
    lam = float(decay.lam) if decay.active else 0.0
    mode = decay.mode if decay.active else "none"
    matrix_hp, adamw_hp = hyperparams_by_role(opt)

    routed = route_parameters(model, decay.scope)
    groups: list[dict[str, Any]] = []
    for role, members in routed.items():
        if not members:
            continue
        hp = matrix_hp if role == "matrix" else adamw_hp
        decayed = role != "adamw_nodecay"
        groups.append(
            {
                **hp,
                "params": [p for _, p in members],
                "param_names": [n for n, _ in members],
                "role": role,
                "weight_decay": lam if decayed else 0.0,
                "decay_mode": mode if decayed else "none",
            }
        )
    try:
        optimizer = OPTIMIZER_CLASSES[name](groups)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return optimizer


def derived_params(cfg: DictConfig, decay: DecaySpec, steps_per_epoch: int) -> dict[str, float | str]:
    """Values derived once per run (logged as derived.<key>): the decay in per-step terms.

    For l2 the per-step decay and the weight RMS are the nominal (SGD-equivalent) values η·λ and
    √(η/2λ): under Adam the coupled penalty is rescaled by 1/√v̂, so they are not predictions.
    sqrt_v has no multiplicative decay at all (0 / inf).
    """
    eta = float(cfg.optimizer.lr)
    units = {"decoupled": "lr_scaled", "per_step": "per_step", "l2": "l2", "sqrt_v": "sqrt_v"}.get(
        decay.mode, "none"
    )
    lam = float(decay.lam) if decay.mode != "none" else 0.0
    if decay.mode in ("decoupled", "l2"):
        per_step = eta * lam
        rms = math.sqrt(eta / (2.0 * lam)) if lam > 0 else math.inf
    elif decay.mode == "per_step":
        per_step = lam
        # Equivalent lr-scaled λ is λ/η, so √(η/2(λ/η)) = η/√(2λ).
        rms = eta / math.sqrt(2.0 * lam) if lam > 0 else math.inf
    else:
        per_step, rms = 0.0, math.inf
    tau_iter = 1.0 / per_step if per_step > 0 else math.inf
    return {
        "steps_per_epoch": steps_per_epoch,
        "lambda": lam,
        "decay_units": units,
        "per_step_decay": per_step,
        "tau_iter": tau_iter,
        "tau_epoch": tau_iter / max(1, steps_per_epoch),
        "predicted_weight_rms": rms,
    }


def set_step_hyperparams(optimizer: Optimizer, lr_mult: float, wd_mult: float) -> None:
    """Scheduled values for the next step: lr = initial_lr·lr_mult, λ = initial_weight_decay·wd_mult."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_mult
        group["weight_decay"] = group["initial_weight_decay"] * wd_mult


def _find_group(optimizer: Optimizer, roles: tuple[str, ...]) -> dict[str, Any] | None:
    for role in roles:
        for group in optimizer.param_groups:
            if group.get("role") == role:
                return group
    return None


def group_hyperparams(optimizer: Optimizer) -> dict[str, float]:
    """Current lr and λ_t of the main (matrix) group; the AdamW group's only where they differ."""
    main = _find_group(optimizer, (MAIN_ROLE,)) or optimizer.param_groups[0]
    out = {"lr": float(main["lr"]), "wd": float(main["weight_decay"])}
    other = _find_group(optimizer, ADAMW_ROLES)
    if other is not None and other is not main:
        if not math.isclose(other["lr"], main["lr"], rel_tol=1e-12, abs_tol=0.0):
            out["lr_adamw"] = float(other["lr"])
        if not math.isclose(other["weight_decay"], main["weight_decay"], rel_tol=1e-12, abs_tol=0.0):
            out["wd_adamw"] = float(other["weight_decay"])
    return out


def param_group_of(optimizer: Optimizer, param: torch.Tensor) -> dict[str, Any]:
    """The one group that holds `param` (for tests and debugging)."""
    hits = [g for g in optimizer.param_groups if any(p is param for p in g["params"])]
    if len(hits) != 1:
        raise LookupError(f"parameter is in {len(hits)} groups")
    return hits[0]
