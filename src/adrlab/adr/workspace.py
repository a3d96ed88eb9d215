"""What an ADR needs from outside conf/: its declared config folders and module folders.

An ADR whose arms use a researcher's own optimizer declares, relative to the project that holds
its adr/ folder (so it works in a fresh clone and in CI):

    config_dir: examples/lion/conf     # searched after conf/ (as `--config-dir`)
    python_path: examples/lion         # where the `_target_` modules live

Composing an arm only needs the config folder; nothing here imports a `_target_`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from adrlab.adr.declared import declared_metrics
from adrlab.adr.document import Adr, AdrError
from adrlab.config import CONFIG_DIRS_ENV, compose


def project_of(adr: Adr) -> Path:
    """The project an ADR belongs to: the folder that holds its adr/ folder."""
    return adr.path.resolve().parent.parent


def _folders(adr: Adr, relative: tuple[str, ...], key: str) -> list[str]:
    out = []
    for item in relative:
        path = project_of(adr) / item
        if not path.is_dir():
            raise AdrError(adr.path, None, f"{key}: {item} is not a folder under {project_of(adr)}")
        out.append(str(path))
    return out


def adr_config_dirs(adr: Adr) -> list[str]:
    return _folders(adr, adr.config_dirs, "config_dir")


def adr_python_paths(adr: Adr) -> list[str]:
    return _folders(adr, adr.python_paths, "python_path")


def activate(adr: Adr) -> None:
    """Make the ADR's config and module folders visible to this process and to the workers it
    starts (environment variables are inherited): before running its experiments."""
    for var, folders in ((CONFIG_DIRS_ENV, adr_config_dirs(adr)), ("PYTHONPATH", adr_python_paths(adr))):
        old = [p for p in os.environ.get(var, "").split(os.pathsep) if p]
        new = [f for f in folders if f not in old]
        if new:
            os.environ[var] = os.pathsep.join([*new, *old])
    for folder in adr_python_paths(adr):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def compose_arm(adr: Adr, scale: str, arm: str) -> DictConfig:
    """One arm's run config at one scale, with the ADR's config folders; imports nothing."""
    exp = adr.experiments[scale]
    return compose(exp.arm_overrides(arm), config_dirs=adr_config_dirs(adr))


def adr_metric_names(adr: Adr) -> set[str]:
    """Extra per-step metrics the ADR's `_target_` optimizers declare (read from their source,
    never imported): what the ADR's criteria may name besides adrlab's own metrics."""
    arms = [
        exp.arm_overrides(a)
        for exp in adr.experiments.values()
        for a, arm in exp.arms.items()
        if not arm.sweep
    ]
    return declared_metrics(project_of(adr), adr.config_dirs, adr.python_paths, arms)
