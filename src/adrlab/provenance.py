"""Provenance of a run: a hash of the code that training imports.

The run cache (`adrlab.train.find_reusable`) reuses a finished run only when its config hash
*and* this code hash match, so a change to the model, the data pipeline, an optimizer, a
schedule or the training loop trains again, while a change to report code or docs does not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

TAG_CODE_HASH = "adrlab.code_hash"
# What a training run's numbers depend on (packages hash every .py file below them).
TRAINING_MODULES: tuple[str, ...] = (
    "adrlab.model",
    "adrlab.data",
    "adrlab.optim",
    "adrlab.schedules",
    "adrlab.lm",
    "adrlab.train",
)


def _source_files(module: str) -> list[tuple[str, Path]]:
    """(name relative to the module, path) of every source file of a module or package."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModuleNotFoundError(f"training module {module} not found; update TRAINING_MODULES")
    if spec.submodule_search_locations:  # a package: every source file below it
        roots = [Path(loc) for loc in spec.submodule_search_locations]
        return sorted((p.relative_to(r).as_posix(), p) for r in roots for p in r.rglob("*.py"))
    assert spec.origin is not None
    return [(Path(spec.origin).name, Path(spec.origin))]


@functools.cache
def training_code_hash() -> str:
    """sha256 (first 16 hex digits) over the training modules' source, line endings ignored."""
    digest = hashlib.sha256()
    for module in TRAINING_MODULES:
        for name, path in _source_files(module):
            digest.update(f"{module}:{name}\n".encode())
            digest.update(path.read_bytes().replace(b"\r\n", b"\n"))
    return digest.hexdigest()[:16]
