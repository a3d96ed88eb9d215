"""What `adrlab adr lint` checks beyond the schema, so an ADR that would break its runs or its
report is caught before anything trains:

- every arm composes at every declared scale, with the overrides its runs would get (scale-wide
  first, then the arm's own, then seed and arm): an invalid override, a missing preset or a config
  group given twice is an error at the arm's file:line;
- the number in the file name (NNNN-...) and in the title (ADR-NNNN) agree, and no two ADRs claim
  one number (they would share reports/adr-NNNN/ and one evidence table).

Findings are (path, line, severity, message) tuples; lint.py turns them into LintMessages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from adrlab.adr.document import Adr, Arm, Experiment
from adrlab.config import ConfigError, check_groups_given_once, compose_explained

ERROR = "error"
Finding = tuple[str, int | None, str, str]

_FILE_NUMBER_RE = re.compile(r"^(\d+)-")
_TITLE_NUMBER_RE = re.compile(r"""^title:\s*["']?[^\n]*?\bADR-(\d+)""")


def arm_checks(adr: Adr) -> list[Finding]:
    """Compose every override arm at every scale; load every sweep arm's spec with its overrides."""
    findings: list[Finding] = []
    for scale, exp in adr.experiments.items():
        for arm in exp.arms.values():
            problem = _sweep_arm_problem(adr, arm) if arm.sweep else _arm_problem(exp, arm)
            if problem:
                where = f"experiments.{scale}.arms.{arm.name}"
                findings.append((str(adr.path), arm.line or exp.line or None, ERROR, f"{where}: {problem}"))
    return findings


def _arm_problem(exp: Experiment, arm: Arm) -> str | None:
    overrides = exp.arm_overrides(arm.name)
    seed = [f"seed={exp.seeds[0]}"] if exp.seeds else []
    try:
        check_groups_given_once(overrides)
        compose_explained([*overrides, *seed, f"arm={arm.name}"])
    except ConfigError as exc:
        return f"does not compose: {exc}"
    return None


def _sweep_arm_problem(adr: Adr, arm: Arm) -> str | None:
    """A sweep arm's overrides on top of its spec (a missing spec is lint's own warning)."""
    from adrlab.sweep.spec import SpecError, load_spec

    spec = adr.path.parent.parent / "sweeps" / f"{arm.sweep}.yaml"
    if not spec.is_file():
        return None
    try:
        check_groups_given_once(list(arm.overrides))
        load_spec(str(spec), list(arm.overrides))
    except (ConfigError, SpecError) as exc:
        return f"sweep {arm.sweep} with overrides {list(arm.overrides)} does not load: {exc}"
    return None


def claimed_numbers(path: Path) -> tuple[int | None, tuple[int, int] | None]:
    """(number in the file name, (line, number) of the title's ADR-NNNN) — either may be None."""
    m = _FILE_NUMBER_RE.match(path.name)
    file_number = int(m.group(1)) if m else None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return file_number, None
    fence = [i for i, line in enumerate(lines[:200]) if line.strip() == "---"][:2]
    for i in range(fence[0] + 1, fence[1]) if len(fence) == 2 else ():
        t = _TITLE_NUMBER_RE.match(lines[i])
        if t:
            return file_number, (i + 1, int(t.group(1)))
    return file_number, None


def _numbers(claim: tuple[int | None, tuple[int, int] | None]) -> set[int]:
    file_number, title = claim
    return {n for n in (file_number, title[1] if title else None) if n is not None}


def number_checks(files: Iterable[Path]) -> list[Finding]:
    """File number vs title number, and numbers claimed twice among these files and the other
    NNNN-*.md files of their folders (a single file linted is still checked against its folder)."""
    files = [Path(f) for f in files]
    pool = {f.resolve(): f for f in files if f.is_file()}
    for folder in {f.resolve().parent for f in files if f.is_file()}:
        for sibling in sorted(folder.glob("[0-9]*-*.md")):
            pool.setdefault(sibling.resolve(), sibling)
    claims = {key: claimed_numbers(path) for key, path in pool.items()}
    findings: list[Finding] = []
    for f in files:
        if f.resolve() not in claims:
            continue
        file_number, title = claims[f.resolve()]
        if file_number is not None and title is not None and title[1] != file_number:
            message = f"the file name says ADR {file_number:04d} but the title says ADR-{title[1]:04d}"
            findings.append((str(f), title[0], ERROR, message + "; make them agree"))
        mine = _numbers(claims[f.resolve()])
        for other, claim in claims.items():
            shared = mine & _numbers(claim)
            if other != f.resolve() and shared:
                number = min(shared)
                findings.append(
                    (
                        str(f),
                        title[0] if title else None,
                        ERROR,
                        f"ADR number {number:04d} is also claimed by {pool[other]}: the two would share "
                        f"reports/adr-{number:04d}/ and one evidence table; give each ADR its own number",
                    )
                )
    return findings
