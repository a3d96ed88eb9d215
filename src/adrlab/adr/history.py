"""Verdict history: every change of a criterion's verdict, and `adrlab report --diff REF`.

``reports/adr-NNNN/history.csv`` gets one row per change (date, scale, criterion, old → new,
estimate, evidence commits), appended only by a writing `adrlab report` and idempotently:
the same verdicts append nothing. The previous verdict is the last history row of that
(scale, criterion), or, before any history, the one in the committed verdict block.
"""

from __future__ import annotations

import csv
import datetime as _dt
import subprocess
from collections.abc import Sequence
from pathlib import Path

from adrlab.adr.verdict import AdrVerdict
from adrlab.adr.writeback import block_verdicts, find_block, number_text
from adrlab.mdtable import markdown_table

HISTORY_COLUMNS: tuple[str, ...] = ("date", "scale", "criterion", "old", "new", "estimate", "commits")
MAX_DIFF_CHARS = 65_000  # a GitHub pull-request comment holds 65,536


def read_history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def previous_verdicts(path: Path, adr_text: str) -> dict[tuple[str, str], str]:
    """(scale, criterion) -> the last recorded verdict: the history, else the current block."""
    block = find_block(adr_text)
    previous = block_verdicts(block.text) if block is not None else {}
    for row in read_history(path):
        previous[(row["scale"], row["criterion"])] = row["new"]
    return previous


def changes(
    verdicts: Sequence[AdrVerdict], previous: dict[tuple[str, str], str], date: str
) -> list[dict[str, str]]:
    """History rows for the criteria whose verdict differs from ``previous``."""
    rows = []
    for v in verdicts:
        commits = ";".join(sorted(v.commits))
        for r in v.results:
            old = previous.get((v.scale, r.id), "")
            if old != r.verdict:
                estimate = number_text(r.estimate)
                row = [date, v.scale, r.id, old, r.verdict, estimate, commits]
                rows.append(dict(zip(HISTORY_COLUMNS, row)))
    return rows


def append_history(path: Path, verdicts: Sequence[AdrVerdict], adr_text: str, date: str | None = None) -> int:
    """Append the verdict changes (write mode only; call it before the block is replaced)."""
    day = date or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    rows = changes(verdicts, previous_verdicts(path, adr_text), day)
    if not rows:
        return 0
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def history_markdown(path: Path) -> str:
    rows = read_history(path)
    if not rows:
        return ""
    table = [
        [
            r["date"],
            r["scale"],
            r["criterion"],
            f"{r['old'] or '—'} → {r['new']}",
            r["estimate"],
            r["commits"],
        ]
        for r in rows
    ]
    return markdown_table(["date", "scale", "criterion", "verdict", "estimate", "evidence commits"], table)


# --------------------------------------------------------------------------- --diff


def _git_show(root: Path, ref: str, rel: str) -> str | None:
    done = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=root, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def verdict_diff(ref: str, adr_paths: Sequence[Path], root: Path) -> str:
    """Markdown summary of verdict changes in the ADRs' blocks since git ``ref``."""
    check = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=root, capture_output=True, text=True
    )
    if check.returncode != 0:
        raise ValueError(f"unknown git ref {ref!r}: {check.stderr.strip() or 'not a commit'}")
    rows, links = [], []
    for path in adr_paths:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        now_block = find_block(path.read_text(encoding="utf-8"), path)
        old_text = _git_show(root, ref, rel)
        old_block = find_block(old_text, rel) if old_text is not None else None
        now = block_verdicts(now_block.text) if now_block else {}
        old = block_verdicts(old_block.text) if old_block else {}
        number = path.name[:4]
        changed = [
            (k, old.get(k, "—"), now.get(k, "—"))
            for k in sorted(set(now) | set(old))
            if old.get(k) != now.get(k)
        ]
        for (scale, cid), before, after in changed:
            rows.append([f"[ADR-{number}]({rel})", scale, cid, before, after])
        if changed:
            links.append(f"[ADR-{number}](reports/adr-{number}/README.md)")
    return _diff_text(ref, rows, links)


def _diff_text(ref: str, rows: list[list[str]], links: list[str]) -> str:
    head = [f"## ADR verdict changes since `{ref}`", ""]
    if not rows:
        return "\n".join([*head, "No verdict changed.", ""])
    tail = ["", "Full reports: " + ", ".join(links), ""]
    shown = rows
    while True:
        text = markdown_table(["ADR", "scale", "criterion", "before", "now"], shown)
        more = (
            []
            if len(shown) == len(rows)
            else ["", f"… and {len(rows) - len(shown)} more changes (see the full reports)."]
        )
        out = "\n".join([*head, f"{len(rows)} verdict change(s).", "", text, *more, *tail])
        if len(out) < MAX_DIFF_CHARS or not shown:
            return out
        shown = shown[: len(shown) // 2]
