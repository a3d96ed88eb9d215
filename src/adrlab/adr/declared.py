"""Metric names a `_target_` optimizer declares, for criteria: read without importing it.

`adrlab.adr.document` accepts a criterion's metric when adrlab logs it (adrlab.adr.metrics) or
when an arm's optimizer class declares it in `adrlab_metric_names` (found in its source by
`adrlab.extensions.declared_metric_names`; reviewing an ADR never runs its code).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from adrlab.config import compose
from adrlab.extensions import declared_metric_names


def declared_metrics(
    project: Path, config_dirs: Iterable[str], python_paths: Iterable[str], arms: Iterable[list[str]]
) -> set[str]:
    """Extra metric names of the arms' optimizers; folders are relative to the ADR's project."""
    dirs = [str(project / d) for d in config_dirs if (project / d).is_dir()]
    roots = [str(project / p) for p in python_paths]
    names: set[str] = set()
    for overrides in arms:
        try:
            cfg = compose(list(overrides), config_dirs=dirs)
        except Exception:  # an arm that does not compose is the arm check's finding, not this one
            continue
        names.update(declared_metric_names(cfg, roots))
    return names
