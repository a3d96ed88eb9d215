"""``adrlab adr lint``: report what keeps ADRs from being executable. Writes nothing.

Schema errors come with file:line. ADRs whose success criteria are prose only (FLAG-1..n,
主要标准/次要标准 primary/secondary criteria, or a 成功标准 success-criterion item such as
IMP-003) but that declare no machine-readable ``criteria`` are listed with the FLAG ids found
and what is missing, so they can be upgraded by hand; they are never modified.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from adrlab.adr.arm_check import arm_checks, number_checks
from adrlab.adr.document import STATUSES, Adr, AdrError, parse_adr_text
from adrlab.adr.runs import find_adr
from adrlab.adr.writeback import block_is_intact, find_block

ERROR = "error"
WARNING = "warning"

_FLAG_RE = re.compile(r"(?<![A-Za-z0-9_-])FLAG-(\d+)\b")
_PRIMARY_RE = re.compile(r"主要标准|次要标准|\b(?:primary|secondary) (?:success )?criteri", re.IGNORECASE)
_SUCCESS_RE = re.compile(r"成功标准|success criteri", re.IGNORECASE)
_LABEL_RE = re.compile(r"\*\*([A-Z]{2,}-\d+)\*\*|\b([A-Z]{2,}-\d{3})\b")
_STATUS_LINE_RE = re.compile(r"^\s*" + r"\s*\|\s*".join(rf"(\*\*)?{s}(\*\*)?" for s in STATUSES) + r"\s*$")


@dataclass(frozen=True)
class LintMessage:
    path: str
    line: int | None
    severity: str  # error | warning
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.severity}: {self.message}"


_ADR_ID_RE = re.compile(r"^(ADR-?)?\d{1,4}$", re.IGNORECASE)


def adr_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files to lint: files as given; directories contribute their ``*.md`` except README.md;
    an ADR id that is not a path (``0002``, ``ADR-0002``) is looked up in the project's adr/."""
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.glob("*.md") if f.name.lower() != "readme.md"))
        elif not p.exists() and _ADR_ID_RE.match(str(item)):
            try:
                out.append(find_adr(str(item)))
            except AdrError:
                out.append(p)  # lint_file reports it as unreadable, naming the path
        else:
            out.append(p)
    return out


def lint(paths: Iterable[str | Path]) -> list[LintMessage]:
    """Lint ADR files (or directories of them); never raises for a malformed ADR."""
    messages: list[LintMessage] = []
    files = adr_files(paths)
    for path in files:
        messages.extend(lint_file(path))
    messages.extend(LintMessage(*finding) for finding in number_checks(files))
    return messages


def lint_file(path: str | Path) -> list[LintMessage]:
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        if _ADR_ID_RE.match(str(path)):  # an id with no file behind it: say which ids exist
            try:
                find_adr(str(path))
            except AdrError as missing:
                return [LintMessage(name, None, ERROR, missing.message)]
        return [LintMessage(name, None, ERROR, f"cannot read: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [LintMessage(name, raw[: exc.start].count(b"\n") + 1, ERROR, "not valid UTF-8")]
    messages: list[LintMessage] = []
    try:
        block = find_block(text, name)
    except AdrError as exc:
        messages.append(LintMessage(name, exc.line, ERROR, exc.message))
        block = None
    if block is not None and not block_is_intact(block.text):
        messages.append(
            LintMessage(name, block.begin_line, ERROR, "verdict block edited by hand (checksum mismatch)")
        )
    try:
        adr = parse_adr_text(text, name)
    except AdrError as exc:
        return [LintMessage(name, exc.line, ERROR, exc.message), *messages]
    prose = _prose_checks(adr, text, block.start if block else None, block.end if block else None)
    arms = [LintMessage(*finding) for finding in arm_checks(adr)]
    return prose + _sweep_checks(adr) + arms + messages


def _sweep_checks(adr: Adr) -> list[LintMessage]:
    """Sweep arms must name a spec in the repository's sweeps/ folder (when there is one)."""
    sweeps = adr.path.parent.parent / "sweeps"
    if not sweeps.is_dir():
        return []
    out = []
    for exp in adr.experiments.values():
        for arm in exp.arms.values():
            if arm.sweep is None:
                continue
            where = f"experiments.{exp.scale}.arms.{arm.name}"
            spec = sweeps / f"{arm.sweep}.yaml"
            if not spec.is_file():
                out.append(
                    LintMessage(str(adr.path), arm.line, WARNING, f"{where}: no sweeps/{arm.sweep}.yaml")
                )
            elif (unpaired := _unpaired_seeds(spec, exp.seeds)) is not None:
                out.append(LintMessage(str(adr.path), arm.line, WARNING, f"{where}: {unpaired}"))
    return out


def _unpaired_seeds(spec: Path, seeds: tuple[int, ...]) -> str | None:
    """A sweep arm takes its seeds from its spec; unless they equal the experiment's, its
    comparisons with the other arms cannot be paired by seed (the engine falls back to Welch)."""
    try:
        spec_seeds = (yaml.safe_load(spec.read_text(encoding="utf-8")) or {}).get("seeds")
    except (OSError, yaml.YAMLError):
        return None  # the spec's own problems are reported by the arm checks
    if spec_seeds is None or list(spec_seeds) == list(seeds):
        return None
    return (
        f"sweeps/{spec.name} runs seeds {list(spec_seeds)} but this experiment's seeds are {list(seeds)}; "
        "make them equal so every comparison is paired by seed"
    )


def _prose_lines(
    adr: Adr, text: str, block_start: int | None, block_end: int | None
) -> list[tuple[int, str]]:
    """Body lines with file line numbers, the generated verdict block left out."""
    out = []
    offset = len(text) - len(adr.body)
    for number, line in enumerate(adr.body.splitlines(keepends=True), start=adr.body_line):
        inside = block_start is not None and block_end is not None and block_start <= offset <= block_end
        if not inside:
            out.append((number, line.rstrip("\r\n")))
        offset += len(line)
    return out


def _prose_checks(adr: Adr, text: str, block_start: int | None, block_end: int | None) -> list[LintMessage]:
    name = str(adr.path)
    lines = _prose_lines(adr, text, block_start, block_end)
    flags: dict[str, int] = {}
    ranked_line: int | None = None
    ranked: list[str] = []
    success: list[tuple[int, str | None]] = []
    status_line: tuple[int, str] | None = None
    for number, line in lines:
        for m in _FLAG_RE.finditer(line):
            flags.setdefault(f"FLAG-{m.group(1)}", number)
        for m in _PRIMARY_RE.finditer(line):
            ranked_line = ranked_line or number
            if m.group(0) not in ranked:
                ranked.append(m.group(0))
        if _SUCCESS_RE.search(line):
            label = _LABEL_RE.search(line)
            success.append((number, (label.group(1) or label.group(2)) if label else None))
        if status_line is None and _STATUS_LINE_RE.match(line):
            bold = re.search(r"\*\*(\w+)\*\*", line)
            if bold:
                status_line = (number, bold.group(1))
    flag_ids = sorted(flags, key=lambda f: int(f.split("-")[1]))
    messages: list[LintMessage] = []
    missing = [
        k for k in ("criteria", "experiments") if not (adr.criteria if k == "criteria" else adr.experiments)
    ]

    if not adr.criteria and (flag_ids or ranked or success):
        found = []
        if flag_ids:
            found.append("prose " + ", ".join(flag_ids))
        if ranked:
            found.append("prose primary/secondary criteria (" + ", ".join(ranked) + ")")
        labels = [label for _, label in success if label]
        if success and not ranked:
            found.append("a prose success criterion" + (f" ({', '.join(labels)})" if labels else ""))
        first = min(
            [flags[f] for f in flag_ids] + ([ranked_line] if ranked_line else []) + [n for n, _ in success]
        )
        messages.append(
            LintMessage(
                name,
                first,
                WARNING,
                f"{' and '.join(found)} but no machine-readable criteria; missing: {', '.join(missing)}",
            )
        )
    elif not adr.criteria and adr.experiments:
        messages.append(
            LintMessage(name, None, WARNING, "experiments declared but no criteria to judge them")
        )
    elif adr.criteria:
        ids = {c.id for c in adr.criteria}
        for flag in flag_ids:
            if flag not in ids and not any(i.startswith(flag + "-") for i in ids):
                messages.append(
                    LintMessage(
                        name, flags[flag], WARNING, f"prose {flag} has no machine criterion with id {flag}"
                    )
                )
        if not any(c.role == "primary" for c in adr.criteria):
            messages.append(
                LintMessage(
                    name, None, WARNING, "no primary criterion: the verdict cannot recommend a status"
                )
            )
    if status_line is not None and status_line[1] != adr.status:
        messages.append(
            LintMessage(
                name,
                status_line[0],
                WARNING,
                f"the body marks status {status_line[1]} but the front matter says {adr.status}",
            )
        )
    return messages
