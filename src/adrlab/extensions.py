"""Extension points: an optimizer, regularizer or LR/WD schedule from outside adrlab.

A config group option whose node has a `_target_` key names an importable object in the
researcher's own module (on PYTHONPATH), the Hydra way. This module is the one place that
defines what each target must be; docs/your-own-idea.md walks through it.

optimizer (DIR/optimizer/NAME.yaml)::

    _target_: mypkg.MyOptimizer  # a torch.optim.Optimizer subclass, or a factory(param_groups, **hp)
    _partial_: true              # optional (lightning-hydra-template habit): adrlab calls it with the groups
    lr: 0.01                     # required: schedules set param_group["lr"] = lr · multiplier(step)
    routing: all                 # all: every parameter; matrices: hidden matrices only, AdamW for the rest
    adamw_lr: null               # routing=matrices: the AdamW rest (null = lr; adamw_betas, adamw_eps too)
    momentum: 0.9                # any other key is passed to the target and must be in its signature

  Optional, on the optimizer class (see `OptimizerHooks`): `adrlab_metric_names` and
  `adrlab_stats()` for extra per-step metrics; `adrlab_sqrt_v(param)`, the √v̂ that
  regularizer=sqrt_v needs. Decay (l2, decoupled, timescale, sqrt_v) is applied by adrlab
  around the step (adrlab.optim.external), so leave the optimizer's own weight decay at 0 unless
  it is part of the idea.

regularizer::

    _target_: mypkg.MyPenalty    # class or factory called with the other keys, returning a `Regularizer`
    scope: all                   # all | no_1d | matrices: which parameters it acts on

lr_schedule, wd_schedule::

    _target_: mypkg.my_schedule  # f(step, total_steps, **other keys) -> multiplier; step 0 = first step
    warmup_steps: 0              # lr_schedule only: the linear warmup every built-in shape has

Lint and report compose configs but never import a target: only `check_targets` and the
builders (called by `adrlab run`, sweeps and ADR runs) import. `source_digest` reads the
target's source without importing it, for the config hash and the run cache.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf

from adrlab.errors import ConfigError

TARGET = "_target_"
PARTIAL = "_partial_"
TARGET_GROUPS = ("optimizer", "regularizer", "lr_schedule", "wd_schedule")
ROUTINGS = ("all", "matrices")
# Keys adrlab reads itself; every other key of a target node is passed to the target.
ADRLAB_KEYS: dict[str, tuple[str, ...]] = {
    "optimizer": (TARGET, PARTIAL, "name", "routing", "adamw_lr", "adamw_betas", "adamw_eps"),
    "regularizer": (TARGET, PARTIAL, "name", "scope"),
    "lr_schedule": (TARGET, PARTIAL, "name", "warmup_steps"),
    "wd_schedule": (TARGET, PARTIAL, "name"),
}
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class OptimizerHooks(Protocol):
    """What adrlab looks for on an optimizer class; every member is optional."""

    #: names of the extra per-step metrics `adrlab_stats` returns (lint accepts them in criteria)
    adrlab_metric_names: tuple[str, ...]

    def adrlab_stats(self) -> dict[str, float]:
        """Called after the step on logging steps (every trainer.log_every)."""
        ...

    def adrlab_sqrt_v(self, param: Any) -> Any:
        """√v̂ (bias-corrected second moment) of `param` after this step: enables regularizer=sqrt_v."""
        ...


@runtime_checkable
class Regularizer(Protocol):
    """A penalty R(θ) given by its gradient. Each step, for every parameter in scope, with m_t the
    wd_schedule multiplier and η_t the parameter group's lr:
    coupled(θ)   -> g ← g + m_t·coupled(θ) before the optimizer sees g (as l2 does);
    decoupled(θ) -> θ ← θ − η_t·m_t·decoupled(θ) after the step, outside the optimizer (as AdamW's decay).
    Define one or both; a method returning None skips that parameter."""


Schedule = Callable[..., float]  # f(step: int, total_steps: int, **params) -> multiplier


def is_target(node: Any) -> bool:
    return isinstance(node, (DictConfig, dict)) and TARGET in node


def hyperparameters(group: str, node: Any) -> dict[str, Any]:
    """The keys of a target node that go to the target (everything adrlab does not read)."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items() if k not in ADRLAB_KEYS[group]}


def _number(group: str, key: str, value: Any, *, minimum: float = 0.0, strict: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        raise ConfigError(f"{group}.{key}={value!r} must be a number {'>' if strict else '>='} {minimum}")


def validate_node(group: str, node: DictConfig) -> None:
    """Compose-time checks of a target node; nothing is imported."""
    target = node.get(TARGET)
    if not isinstance(target, str) or not _DOTTED.match(target):
        raise ConfigError(
            f"{group}._target_={target!r} must be a dotted import path such as mypkg.MyOptimizer "
            "(module, then the object in it)"
        )
    if node.get(PARTIAL, True) is not True:
        raise ConfigError(
            f"{group}._partial_={node.get(PARTIAL)!r}: adrlab always calls the target itself "
            "(with the parameter groups for an optimizer); write _partial_: true or leave it out"
        )
    if group == "optimizer":
        if "lr" not in node:
            raise ConfigError(f"optimizer._target_={target} needs an lr key: the LR schedule multiplies it")
        _number(group, "lr", node.lr)
        if node.get("routing", "all") not in ROUTINGS:
            raise ConfigError(
                f"optimizer.routing={node.get('routing')!r} is not valid; "
                f"choose one of: {', '.join(ROUTINGS)}"
            )
        if node.get("adamw_lr") is not None:
            _number(group, "adamw_lr", node.adamw_lr)
    if group == "lr_schedule" and "warmup_steps" in node:
        _number(group, "warmup_steps", node.warmup_steps, strict=False)


# --------------------------------------------------------------------------- source, no import


def module_file(module: str, roots: Iterable[str | Path] = ()) -> Path | None:
    """The file that `import module` would load, found on roots + sys.path without importing."""
    parts = module.split(".")
    for root in [*roots, *sys.path]:
        base = Path(root or ".").joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def locate_source(target: str, roots: Iterable[str | Path] = ()) -> tuple[str, Path] | None:
    """(module name, file) of the longest importable prefix of a dotted target."""
    roots = list(roots)
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        path = module_file(module, roots)
        if path is not None:
            return module, path
    return None


def source_digest(target: str, roots: Iterable[str | Path] = ()) -> str:
    """Identity of the code behind a target: a hash of its package's (or module's) source;
    the distribution version for installed packages (torch.optim.SGD -> torch==2.x)."""
    found = locate_source(target, roots)
    if found is None:
        return "not-found"
    module, path = found
    top = module.split(".")[0]
    if {"site-packages", "dist-packages"} & set(path.parts):
        try:
            return f"{top}=={metadata.version(top)}"
        except metadata.PackageNotFoundError:
            pass
    depth = module.count(".") + (1 if path.name == "__init__.py" else 0)
    root = path.parents[depth - 1] if depth else path  # the top-level package folder, or the file
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root.parent)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def target_digests(cfg: DictConfig, roots: Iterable[str | Path] = ()) -> dict[str, str]:
    """{group: "target@digest"} for every target node of a run config (empty for built-ins)."""
    roots = list(roots)
    return {
        group: f"{cfg[group][TARGET]}@{source_digest(str(cfg[group][TARGET]), roots)}"
        for group in TARGET_GROUPS
        if is_target(cfg.get(group))
    }


def declared_metric_names(cfg: DictConfig, roots: Iterable[str | Path] = ()) -> list[str]:
    """Extra per-step metric names the optimizer's class declares (`adrlab_metric_names = (...)`),
    read from its source with `ast`, never by importing it: lint calls this."""
    node = cfg.get("optimizer")
    if not is_target(node):
        return []
    target = str(node[TARGET])
    found = locate_source(target, roots)
    if found is None:
        return []
    module, path = found
    rest = target[len(module) + 1 :].split(".")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    return _class_metric_names(tree, rest[-1], set())


def _class_metric_names(tree: ast.Module, class_name: str, seen: set[str]) -> list[str]:
    """`adrlab_metric_names` of a class in this module, following same-module base classes."""
    if class_name in seen:
        return []
    seen.add(class_name)
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name):
        for stmt in cls.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "adrlab_metric_names" for t in targets):
                value = getattr(stmt, "value", None)
                if isinstance(value, (ast.Tuple, ast.List)):
                    return [
                        e.value
                        for e in value.elts
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    ]
        for base in cls.bases:
            if isinstance(base, ast.Name):
                names = _class_metric_names(tree, base.id, seen)
                if names:
                    return names
    return []


# --------------------------------------------------------------------------- import (run time only)


def import_target(group: str, target: str) -> Any:
    """The object a dotted target names, or a ConfigError naming the module and the Python error."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # this prefix is not a module: try a shorter one
            raise ConfigError(
                f"{group}._target_={target}: importing module {module_name!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:  # the user's module raised while importing: show its error
            raise ConfigError(
                f"{group}._target_={target}: importing module {module_name!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise ConfigError(
                    f"{group}._target_={target}: module {module_name!r} has no attribute {attr!r}"
                )
            obj = getattr(obj, attr)
        return obj
    raise ConfigError(
        f"{group}._target_={target}: cannot import it: ModuleNotFoundError: No module named {parts[0]!r} "
        "(is its folder on PYTHONPATH?)"
    )


def check_kwargs(group: str, target: str, fn: Any, kwargs: dict[str, Any], skip: int) -> None:
    """Every key must be a parameter of the target's signature (after the first `skip` ones)."""
    try:
        params = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return  # no signature to check against (a builtin): the call itself will say
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"{group}.{unknown[0]} is not a hyperparameter of {target}; it takes: "
            f"{', '.join(accepted) or '(none)'}"
        )


def resolve_optimizer(cfg: DictConfig) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The optimizer target (class or factory) and its keyword arguments, checked."""
    import torch

    node = cfg.optimizer
    target = str(node[TARGET])
    fn = import_target("optimizer", target)
    if inspect.isclass(fn) and not issubclass(fn, torch.optim.Optimizer):
        raise ConfigError(
            f"optimizer._target_={target} is a class but not an optimizer (not a torch.optim.Optimizer "
            "subclass); name an Optimizer subclass or a factory taking the parameter groups"
        )
    if not callable(fn):
        raise ConfigError(
            f"optimizer._target_={target} is {type(fn).__name__}, not an optimizer or a factory"
        )
    kwargs = hyperparameters("optimizer", node)
    check_kwargs("optimizer", target, fn, kwargs, skip=1)
    if cfg.regularizer.get("name") == "sqrt_v" and inspect.isclass(fn) and not hasattr(fn, "adrlab_sqrt_v"):
        raise_no_sqrt_v(target)
    return fn, kwargs


def raise_no_sqrt_v(target: str) -> None:
    raise ConfigError(
        f"regularizer=sqrt_v penalises λ·√v̂, but optimizer._target_={target} declares no second moment: "
        "give the class a method adrlab_sqrt_v(self, param) returning √v̂ (the capability), or pick "
        "regularizer in {none, l2, decoupled, timescale}"
    )


def resolve_callable(group: str, cfg: DictConfig, skip: int) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A regularizer (skip=0) or schedule (skip=2: step, total_steps) target and its kwargs."""
    node = cfg[group]
    target = str(node[TARGET])
    fn = import_target(group, target)
    if not callable(fn):
        raise ConfigError(f"{group}._target_={target} is {type(fn).__name__}, not callable")
    kwargs = hyperparameters(group, node)
    check_kwargs(group, target, fn, kwargs, skip=skip)
    return fn, kwargs


def check_targets(cfg: DictConfig) -> None:
    """Import and check every target of a run config (before training; lint never calls this)."""
    if is_target(cfg.optimizer):
        resolve_optimizer(cfg)
    if is_target(cfg.regularizer):
        resolve_callable("regularizer", cfg, skip=0)
    for group in ("lr_schedule", "wd_schedule"):
        if is_target(cfg[group]):
            resolve_callable(group, cfg, skip=2)
