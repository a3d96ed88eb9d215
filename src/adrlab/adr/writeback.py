"""Write a verdict back into an ADR, touching nothing but the verdict block.

The discipline is cog's: generated text lives only between
``<!-- adrlab:verdict:begin -->`` and ``<!-- adrlab:verdict:end -->`` (appended at the end
on the first write, after one blank line); every byte outside stays as it was, CRLF files
stay CRLF, an identical block is not rewritten (mtime untouched), the write is atomic, and a
checksum line inside the block detects hand edits, which are refused unless forced. The human
``status`` changes only with ``auto_status: true`` and then by a one-line edit.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adrlab.adr.document import (
    STATUSES,
    AdrError,
    find_front_matter,
    load_front_matter,
    set_front_matter_value,
)
from adrlab.adr.verdict import INCONCLUSIVE, NO_DATA, UNKNOWN, VERDICTS, AdrVerdict, CriterionResult

BEGIN = "<!-- adrlab:verdict:begin -->"
END = "<!-- adrlab:verdict:end -->"
HEADING = "## 自动验证 (Automated Verification)"
CHECKSUM_RE = re.compile(r"^<!-- adrlab:verdict:checksum sha256:([0-9a-f]{64}) -->$")
CONTEXT_KEYS: tuple[str, ...] = ("scale", "data", "evidence_date", "evidence", "plots", "missing")
MAX_RUN_IDS = 6

UNCHANGED = "unchanged"
WRITTEN = "written"
STALE = "stale"
REFUSED_EDITED = "refused-edited"


class EditedBlockError(AdrError):
    """The verdict block was edited by hand (checksum mismatch) and ``force`` was not given."""


@dataclass(frozen=True)
class WriteResult:
    status: str  # unchanged | written | stale (check mode) | refused-edited (check mode)
    path: Path
    message: str = ""
    status_changed: bool = False  # the front matter status was (or would be) edited


# --------------------------------------------------------------------------- rendering


def number_text(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _cell(text: str) -> str:
    # A table cell cannot hold a pipe or a line break.
    return " ".join(str(text).split()).replace("|", "\\|")


def _measured(r: CriterionResult) -> str:
    if r.verdict == NO_DATA or math.isnan(r.estimate):
        return "—"
    n = "/".join(str(r.n[a]) for a in r.n)
    return f"{number_text(r.estimate)} [{number_text(r.ci_low)}, {number_text(r.ci_high)}] (n={n})"


def _method(r: CriterionResult) -> str:
    """Short method label for the table; the full text is in the notes when it matters."""
    m = r.method
    if not m:
        return "—"
    if "non-finite" in m:
        return "range (non-finite)"
    for key, label in (
        ("paired t", "paired t"),
        ("Welch", "Welch t (unpaired)"),
        ("Bonferroni", "Bonferroni t"),
    ):
        if key in m:
            return label
    return "t"


def _run_ids(ids: list[str]) -> str:
    short = [f"`{i[:8]}`" for i in ids[:MAX_RUN_IDS]]
    if len(ids) > MAX_RUN_IDS:
        short.append(f"+{len(ids) - MAX_RUN_IDS} more")
    return ", ".join(short) if short else "—"


def block_checksum(content: str) -> str:
    """sha256 of the block's content lines (after the begin marker, before the checksum line)."""
    return hashlib.sha256(content.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def _status_line(verdict: AdrVerdict, where: str = "") -> str:
    if verdict.auto_status:
        # Only the recommendation is shown: the front matter follows it, so the block stays
        # the same on the next run (rendering the pre-edit human status would flip-flop).
        return f"- Status: **{verdict.recommended_status}**{where} (set automatically: `auto_status: true`)"
    if verdict.status_differs:
        return (
            f"- Recommended status: **{verdict.recommended_status}**{where}; human status: "
            f"{verdict.human_status} (unchanged; edit `status` in the front matter to adopt)"
        )
    return f"- Recommended status: **{verdict.recommended_status}**{where} (same as the human status)"


def _commits(verdict: AdrVerdict) -> str:
    parts = []
    for sha, n in verdict.commits.items():
        runs = f"{n} run{'s' if n != 1 else ''}"
        if sha == UNKNOWN:
            parts.append(f"unknown ({runs}: snapshot written before commits were recorded)")
        elif sha.endswith("-dirty"):
            parts.append(f"`{sha}` ({runs}, **dirty tree**: uncommitted changes)")
        else:
            parts.append(f"`{sha}` ({runs})")
    return "- Commits: " + (", ".join(parts) if parts else "none")


def _notes(verdict: AdrVerdict) -> list[str]:
    notes = []
    for r in verdict.results:
        parts = [g.removeprefix("INVALID: ") for g in r.guards if g.startswith("INVALID: ")]
        parts += [p for p in (r.note, "missing: " + ", ".join(r.missing) if r.missing else "") if p]
        if r.verdict == INCONCLUSIVE and r.seeds_needed is not None:
            parts.append(
                f"roughly {r.seeds_needed} seeds per arm would decide it if the observed effect is real "
                "(rough: with few seeds the spread itself is barely known)"
            )
        if r.method and r.verdict != NO_DATA:
            parts.append(f"method: {r.method}")
        if parts:
            notes.append(f"- **{r.id}** ({r.verdict}): " + "; ".join(parts) + ".")
    return notes


def _warnings(verdict: AdrVerdict) -> list[str]:
    seen: dict[str, None] = {}
    for r in verdict.results:
        seen.update(dict.fromkeys(g.removeprefix("warning: ") for g in r.guards if g.startswith("warning: ")))
    return [f"- {w}." for w in seen]


def _section(verdict: AdrVerdict | None, context: Mapping[str, Any]) -> list[str]:
    """One scale's part of the block."""
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise ValueError(f"unknown context keys {unknown}; valid: {', '.join(CONTEXT_KEYS)}")
    scale = context.get("scale") or (verdict.scale if verdict else "?")
    lines = [f"### Scale `{scale}`", ""]
    if verdict is None:
        why = context.get("missing") or "no runs at this scale"
        return [*lines, f"**NO DATA**: {why}. Verdicts are never taken from another scale's runs.", ""]
    if context.get("data"):
        lines.append(f"- Data: {context['data']}")
    evidence = "- Evidence:"
    if context.get("evidence"):
        evidence += f" [{Path(str(context['evidence'])).name}]({context['evidence']}),"
    lines += [evidence + f" newest run {context.get('evidence_date') or 'unknown'}", _commits(verdict)]
    lines += [_status_line(verdict), f"- Rule: {verdict.rule}" if verdict.rule else ""]
    lines = [line for line in lines if line]
    lines += ["- Verdicts: " + ", ".join(f"{verdict.counts.get(v, 0)} {v}" for v in VERDICTS), ""]
    if verdict.results:
        lines.append("| ID | Role | Claim | Measured (95% CI, n) | Method | Threshold | Verdict | Runs |")
        lines.append("|---|---|---|---|---|---|---|---|")
    else:
        lines.append("No machine-readable criteria: nothing to judge.")
    for r in verdict.results:
        cells = [
            r.id,
            r.role,
            r.claim,
            _measured(r),
            _method(r),
            r.threshold,
            f"**{r.verdict}**",
            _run_ids(r.run_ids),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for title, items in (
        ("Notes:", _notes(verdict)),
        ("Validity warnings (do not change verdicts):", _warnings(verdict)),
    ):
        if items:
            lines += ["", title, "", *items]
    plots = [str(p) for p in context.get("plots") or []]
    if plots:
        lines += ["", "Plots:", "", *[f"- [{Path(p).stem}]({p})" for p in plots]]
    return [*lines, ""]


Section = tuple[AdrVerdict | None, Mapping[str, Any]]


def render_block(verdict: AdrVerdict | Sequence[Section], context: Mapping[str, Any] | None = None) -> str:
    """The verdict block (LF text, ending with a newline), deterministic for equal inputs.

    Either one verdict and its ``context``, or a list of (verdict or None, context) sections,
    one per scale; None is a scale without its own evidence (NO DATA, never another scale's
    verdicts). ``context``: ``scale``, ``data`` (a description of the data),
    ``evidence_date`` (the newest run's date, never "now"), ``evidence`` (relative path of the
    snapshot), ``plots`` (relative paths), ``missing`` (why a scale has no data). Unknown keys
    are refused to catch typos. The headline status is the last section with evidence.
    """
    sections: list[Section] = [(verdict, context or {})] if isinstance(verdict, AdrVerdict) else list(verdict)
    lines = [HEADING, ""]
    lines.append(
        "Generated by adrlab from the stored runs; do not edit inside this block (a checksum "
        "detects hand edits). Write comments outside the markers."
    )
    lines.append("")
    judged = [(v, c) for v, c in sections if v is not None]
    if judged and len(sections) > 1:
        v, c = judged[-1]
        lines += [_status_line(v, f" (from scale `{c.get('scale') or v.scale}`)"), ""]
    for v, c in sections:
        lines += _section(v, c)
    content = "".join(line + "\n" for line in lines)
    return f"{BEGIN}\n{content}<!-- adrlab:verdict:checksum sha256:{block_checksum(content)} -->\n{END}\n"


_SCALE_RE = re.compile(r"Scale[: ]+`([^`]+)`")
_ROW_RE = re.compile(r"^\| ([^|]+?) \|.*\| \*\*(" + "|".join(re.escape(v) for v in VERDICTS) + r")\*\* \|")


def block_verdicts(text: str) -> dict[tuple[str, str], str]:
    """(scale, criterion id) -> verdict, read back from a rendered block (any layout adrlab
    wrote: one section per scale, or the older single-scale block)."""
    out: dict[tuple[str, str], str] = {}
    scale = "smoke"
    for line in text.splitlines():
        m = _SCALE_RE.search(line)
        if m and (line.startswith("###") or line.startswith("- Scale")):
            scale = m.group(1)
            continue
        row = _ROW_RE.match(line)
        if row:
            out[(scale, row.group(1).replace("\\|", "|"))] = row.group(2)
    return out


# --------------------------------------------------------------------------- locating the block


@dataclass(frozen=True)
class BlockSpan:
    start: int  # offset of the begin marker line
    end: int  # offset just after the end marker line's text (its line ending excluded)
    begin_line: int
    end_line: int
    text: str  # from the begin marker through the end marker, original line endings


def find_block(text: str, path: str | Path = "<adr>") -> BlockSpan | None:
    """The verdict block, None when absent; AdrError (file:line) for malformed markers.

    Markers inside fenced code blocks are documentation, not markers, and are ignored.
    """
    offset = 0
    fence: str | None = None
    begin: tuple[int, int] | None = None  # (offset, line)
    found: BlockSpan | None = None
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        fence_m = re.match(r"^(`{3,}|~{3,})", stripped)
        if fence_m and (fence is None or stripped.startswith(fence)):
            fence = fence_m.group(1) if fence is None else None
        elif fence is None and stripped in (BEGIN, END):
            if stripped == BEGIN:
                if begin is not None:
                    raise AdrError(
                        path, number, f"second verdict begin marker; the one at line {begin[1]} has no end"
                    )
                if found is not None:
                    raise AdrError(
                        path, number, f"two verdict blocks (first at line {found.begin_line}); keep one"
                    )
                begin = (offset, number)
            else:
                if begin is None:
                    raise AdrError(path, number, "verdict end marker without a begin marker")
                end = offset + len(line.rstrip("\r\n"))
                found = BlockSpan(begin[0], end, begin[1], number, text[begin[0] : end])
                begin = None
        offset += len(line)
    if begin is not None:
        raise AdrError(path, begin[1], "verdict begin marker without an end marker")
    return found


def block_is_intact(block_text: str) -> bool:
    """True when the block's checksum line matches its content (line endings ignored)."""
    lines = block_text.replace("\r\n", "\n").rstrip("\n").split("\n")
    if len(lines) < 3 or lines[0].strip() != BEGIN or lines[-1].strip() != END:
        return False
    m = CHECKSUM_RE.match(lines[-2].strip())
    if not m:
        return False
    content = "".join(line + "\n" for line in lines[1:-2])
    return block_checksum(content) == m.group(1)


# --------------------------------------------------------------------------- writing


def _line_ending(text: str) -> str:
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, keep the mode, then os.replace."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def splice_block(text: str, block_text: str, path: str | Path = "<adr>") -> str:
    """``text`` with its verdict block replaced by (or appended as) ``block_text``."""
    eol = _line_ending(text)
    block = block_text.replace("\r\n", "\n").rstrip("\n").replace("\n", eol)
    span = find_block(text, path)
    if span is not None:
        return text[: span.start] + block + text[span.end :]
    prefix = text if text.endswith("\n") or not text else text + eol
    if not prefix.endswith(eol + eol):
        prefix += eol  # one blank line before the block
    return prefix + block + eol


def write_verdict(
    path: str | Path,
    block_text: str,
    *,
    check: bool = False,
    force: bool = False,
    status: str | None = None,
) -> WriteResult:
    """Put ``block_text`` (from `render_block`) into the ADR at ``path``.

    ``check``: never write; report ``stale`` when the file would change (block missing or
    different), ``refused-edited`` when the block was edited by hand. Otherwise an edited
    block raises EditedBlockError unless ``force``. ``status``: the recommended status,
    written into the front matter only when it has ``auto_status: true``. A malformed ADR
    raises AdrError (file:line) and is left byte-identical.
    """
    lines = block_text.replace("\r\n", "\n").rstrip("\n").split("\n")
    if lines[0] != BEGIN or lines[-1] != END:
        raise ValueError("block_text must start with the begin marker and end with the end marker")
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
    p = Path(os.path.realpath(path))
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdrError(path, raw[: exc.start].count(b"\n") + 1, "not valid UTF-8") from exc
    find_front_matter(text, path)
    span = find_block(text, path)
    if span is not None and not block_is_intact(span.text) and not force:
        message = (
            f"{path}:{span.begin_line}: the verdict block was edited by hand (checksum mismatch); "
            "move notes outside the markers, or overwrite with --force"
        )
        if check:
            return WriteResult(REFUSED_EDITED, p, message)
        raise EditedBlockError(path, span.begin_line, message.split(": ", 1)[1])
    new = splice_block(text, block_text, path)
    status_changed = False
    if status is not None:
        data, _ = load_front_matter(text, path)
        if data.get("auto_status") is True and data.get("status") != status:
            new = set_front_matter_value(new, "status", status, path=path)
            status_changed = True
    if new == text:
        return WriteResult(UNCHANGED, p, "verdict block is up to date")
    if check:
        why = "no verdict block" if span is None else "verdict block differs"
        if status_changed:
            why += "; status would change"
        return WriteResult(STALE, p, f"{path}: stale ({why})", status_changed)
    _atomic_write(p, new.encode("utf-8"))
    return WriteResult(WRITTEN, p, "verdict block written", status_changed)
