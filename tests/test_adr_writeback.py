"""Write-back: only the marked block changes, atomically and idempotently; edits are refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from adrlab.adr import writeback
from adrlab.adr.document import AdrError, parse_adr_text
from adrlab.adr.verdict import CORE_COLUMNS, evaluate
from adrlab.adr.writeback import (
    BEGIN,
    END,
    REFUSED_EDITED,
    STALE,
    UNCHANGED,
    WRITTEN,
    EditedBlockError,
    block_is_intact,
    block_verdicts,
    render_block,
    write_verdict,
)

ADR = """\
---
title: "ADR-0003: test"
status: "Proposed"  # human
auto_status: false
experiments:
  smoke:
    seeds: [1, 2]
    arms:
      a: ["optimizer=rmsuon"]
      b: ["optimizer=adamw"]
criteria:
  - id: PRIMARY
    claim: "a | beats b"
    role: primary
    arm: a
    baseline: b
    relation: ratio
    metric: val_ppl
    statistic: final
    compare: "<"
    threshold: 0.98
---

# ADR-0003: test

## 决策 (Decision)

Keep   trailing spaces   \n\ttabs and ünïcödé.
"""
CONTEXT = {
    "scale": "smoke",
    "data": "synthetic Markov source",
    "evidence_date": "2025-11-30",
    "evidence": "../reports/adr-0003/runs.csv",
    "plots": ["../reports/adr-0003/val_ppl.png"],
}


def evidence(a_final: float = 8.0) -> pd.DataFrame:
    rows = []
    for arm, final in (("a", a_final), ("b", 10.0)):
        for seed in (1, 2):
            run = f"{arm}{seed}0123456789abcdef"
            for epoch, value in ((1, 12.0), (2, final + seed * 0.01)):
                rows.append((run, arm, seed, "FINISHED", "epoch", "val_ppl", float(epoch), value))
    return pd.DataFrame(rows, columns=list(CORE_COLUMNS))


def block(text: str = ADR, a_final: float = 8.0) -> str:
    return render_block(evaluate(parse_adr_text(text, "a.md"), evidence(a_final)), CONTEXT)


def write(tmp_path: Path, text: str, name: str = "0003-test.md") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def test_render_block_content() -> None:
    b = block()
    assert b == block()  # deterministic
    assert b.startswith(BEGIN + "\n## 自动验证 (Automated Verification)\n")
    assert b.endswith("\n" + END + "\n")
    assert "\r" not in b
    assert block_is_intact(b)
    assert "| PRIMARY | primary | a \\| beats b | 0.8003 [0.799, 0.8016] (n=2/2) | paired t |" in b
    assert "| final(val_ppl): a / b < 0.98 | **PASS** | `a1012345`, `a2012345`, `b1012345`, `b2012345` |" in b
    assert "### Scale `smoke`\n- Data: synthetic Markov source" in b
    assert "- Commits: unknown (4 runs: snapshot written before commits were recorded)" in b
    assert "- Rule: Accepted: every primary criterion passes (intersection–union test" in b
    assert "- Evidence: [runs.csv](../reports/adr-0003/runs.csv), newest run 2025-11-30" in b
    assert "Recommended status: **Accepted**; human status: Proposed" in b
    assert "- [val_ppl](../reports/adr-0003/val_ppl.png)" in b
    assert "1 PASS, 0 FAIL, 0 INCONCLUSIVE, 0 INVALID, 0 NO DATA" in b
    with pytest.raises(ValueError, match="unknown context keys"):
        render_block(evaluate(parse_adr_text(ADR, "a.md"), evidence()), {"plot": []})


def test_render_block_without_criteria() -> None:
    text = '---\ntitle: "ADR-0001: x"\nstatus: "Rejected"\n---\n# body\n'
    b = render_block(evaluate(parse_adr_text(text, "a.md"), evidence()), {"evidence_date": "2025-11-30"})
    assert "No machine-readable criteria: nothing to judge." in b and "| ID |" not in b
    assert "### Scale `smoke`" in b and block_is_intact(b)


def test_first_write_appends_after_one_blank_line(tmp_path: Path) -> None:
    p = write(tmp_path, ADR)
    result = write_verdict(p, block())
    assert result.status == WRITTEN and not result.status_changed
    out = p.read_text(encoding="utf-8")
    assert out == ADR + "\n" + block()
    # the human status is untouched without auto_status
    assert 'status: "Proposed"  # human' in out
    # a file without a final newline gets one, then the blank line
    q = write(tmp_path, ADR.rstrip("\n"), "0004.md")
    write_verdict(q, block())
    assert q.read_text(encoding="utf-8") == ADR + "\n" + block()
    # a file already ending in a blank line gets no second one
    r = write(tmp_path, ADR + "\n", "0005.md")
    write_verdict(r, block())
    assert r.read_text(encoding="utf-8") == ADR + "\n" + block()


def test_second_write_changes_nothing(tmp_path: Path) -> None:
    p = write(tmp_path, ADR)
    write_verdict(p, block())
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    before = p.read_bytes()
    result = write_verdict(p, block())
    assert result.status == UNCHANGED
    assert p.read_bytes() == before
    assert p.stat().st_mtime_ns == 1_000_000_000


def test_replacement_keeps_everything_outside_byte_identical(tmp_path: Path) -> None:
    tail = "\n## Notes after the block\n\nhand-written\n"
    p = write(tmp_path, ADR + "\n" + block() + tail)
    new_block = block(a_final=11.0)
    assert new_block != block()
    assert write_verdict(p, new_block).status == WRITTEN
    out = p.read_text(encoding="utf-8")
    assert out == ADR + "\n" + new_block + tail
    assert "**FAIL**" in out


def test_crlf_file_stays_crlf(tmp_path: Path) -> None:
    text = ADR.replace("\n", "\r\n")
    p = write(tmp_path, text)
    write_verdict(p, block())
    raw = p.read_bytes()
    assert raw.startswith(text.encode("utf-8"))
    assert raw == (text + "\r\n" + block().replace("\n", "\r\n")).encode("utf-8")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no lone LF anywhere
    assert write_verdict(p, block()).status == UNCHANGED
    # replacing keeps CRLF too, and the checksum ignores line endings
    assert write_verdict(p, block(a_final=11.0)).status == WRITTEN
    raw = p.read_bytes()
    assert raw.startswith(text.encode("utf-8")) and b"\n" not in raw.replace(b"\r\n", b"")
    assert write_verdict(p, block(a_final=11.0), check=True).status == UNCHANGED


def test_check_mode_never_writes(tmp_path: Path) -> None:
    p = write(tmp_path, ADR)
    before = p.read_bytes()
    result = write_verdict(p, block(), check=True)
    assert result.status == STALE and "no verdict block" in result.message
    assert p.read_bytes() == before
    write_verdict(p, block())
    assert write_verdict(p, block(), check=True).status == UNCHANGED
    current = p.read_bytes()
    result = write_verdict(p, block(a_final=11.0), check=True)
    assert result.status == STALE and "verdict block differs" in result.message
    assert p.read_bytes() == current


def test_hand_edit_is_refused_unless_forced(tmp_path: Path) -> None:
    p = write(tmp_path, ADR)
    write_verdict(p, block())
    edited = p.read_text(encoding="utf-8").replace("**PASS**", "**FAIL**")
    p.write_text(edited, encoding="utf-8")
    before = p.read_bytes()
    begin_line = edited.splitlines().index(BEGIN) + 1
    with pytest.raises(EditedBlockError) as info:
        write_verdict(p, block())
    assert str(info.value).startswith(f"{p}:{begin_line}: the verdict block was edited by hand")
    assert "--force" in str(info.value)
    assert p.read_bytes() == before
    checked = write_verdict(p, block(), check=True)
    assert checked.status == REFUSED_EDITED and p.read_bytes() == before
    assert write_verdict(p, block(), force=True).status == WRITTEN
    assert p.read_text(encoding="utf-8") == ADR + "\n" + block()


def test_removed_checksum_line_counts_as_edit(tmp_path: Path) -> None:
    text = ADR + "\n" + BEGIN + "\nmy own table\n" + END + "\n"
    p = write(tmp_path, text)
    with pytest.raises(EditedBlockError):
        write_verdict(p, block())
    assert p.read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    ("suffix", "line_offset", "message"),
    [
        (f"\n{BEGIN}\nstuff\n", 2, "verdict begin marker without an end marker"),
        (f"\n{END}\n", 2, "verdict end marker without a begin marker"),
        (f"\n{BEGIN}\n{BEGIN}\n{END}\n", 3, "second verdict begin marker; the one at line"),
        (f"\n{BEGIN}\n{END}\n\n{BEGIN}\n{END}\n", 5, "two verdict blocks (first at line"),
    ],
)
def test_malformed_markers_are_refused_byte_identical(
    tmp_path: Path, suffix: str, line_offset: int, message: str
) -> None:
    text = ADR + suffix
    p = write(tmp_path, text)
    for kwargs in ({}, {"check": True}, {"force": True}):
        with pytest.raises(AdrError) as info:
            write_verdict(p, block(), **kwargs)
        assert info.value.line == ADR.count("\n") + line_offset
        assert message in info.value.message
        assert str(info.value).startswith(f"{p}:{info.value.line}: ")
        assert p.read_bytes() == text.encode("utf-8")


def test_missing_front_matter_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "# just markdown\n")
    with pytest.raises(AdrError, match="missing front matter"):
        write_verdict(p, block())
    assert p.read_text(encoding="utf-8") == "# just markdown\n"


def test_markers_inside_code_fences_are_documentation(tmp_path: Path) -> None:
    text = ADR + f"\n```markdown\n{BEGIN}\n(example)\n```\n"
    p = write(tmp_path, text)
    write_verdict(p, block())
    assert p.read_text(encoding="utf-8") == text + "\n" + block()


def test_write_is_atomic_and_keeps_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, ADR)
    p.chmod(0o640)
    write_verdict(p, block())
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert sorted(f.name for f in tmp_path.iterdir()) == ["0003-test.md"]  # no temp files left
    before = p.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(writeback.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_verdict(p, block(a_final=11.0))
    assert p.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["0003-test.md"]


def test_auto_status_edits_only_the_status_line(tmp_path: Path) -> None:
    text = ADR.replace("auto_status: false", "auto_status: true")
    p = write(tmp_path, text)
    v = evaluate(parse_adr_text(text, "a.md"), evidence())
    b = render_block(v, CONTEXT)
    assert "Status: **Accepted** (set automatically" in b
    assert write_verdict(p, b, check=True, status=v.recommended_status).status_changed
    result = write_verdict(p, b, status=v.recommended_status)
    assert result.status == WRITTEN and result.status_changed
    out = p.read_text(encoding="utf-8")
    assert out == text.replace('status: "Proposed"  # human', 'status: "Accepted"  # human') + "\n" + b
    # the next run re-derives the same block from the edited file: nothing changes
    v2 = evaluate(parse_adr_text(out, "a.md"), evidence())
    assert render_block(v2, CONTEXT) == b
    assert write_verdict(p, b, status=v2.recommended_status).status == UNCHANGED


def test_status_not_changed_without_opt_in(tmp_path: Path) -> None:
    p = write(tmp_path, ADR)
    result = write_verdict(p, block(), status="Accepted")
    assert not result.status_changed
    assert 'status: "Proposed"  # human' in p.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="unknown status"):
        write_verdict(p, block(), status="Great")
    with pytest.raises(ValueError, match="begin marker"):
        write_verdict(p, "no markers\n")


def test_block_names_commits_and_flags_a_dirty_tree() -> None:
    ev = evidence()
    ev["git_sha"] = ["abc123def456" if run.startswith("a") else "0a1b2c3d4e5f-dirty" for run in ev["run_id"]]
    ev["config_hash"] = "feedbeef"
    b = render_block(evaluate(parse_adr_text(ADR, "a.md"), ev), CONTEXT)
    assert (
        "- Commits: `0a1b2c3d4e5f-dirty` (2 runs, **dirty tree**: uncommitted changes), "
        "`abc123def456` (2 runs)" in b
    )


def test_sections_per_scale_and_no_data_for_a_scale_without_runs() -> None:
    v = evaluate(parse_adr_text(ADR, "a.md"), evidence())
    b = render_block([(v, CONTEXT), (None, {"scale": "paper", "missing": "no runs-paper.csv"})])
    smoke, paper = b.split("### Scale `paper`")
    assert "**PASS**" in smoke and "**PASS**" not in paper
    assert "**NO DATA**: no runs-paper.csv. Verdicts are never taken from another scale's runs." in paper
    assert "- Recommended status: **Accepted** (from scale `smoke`)" in b
    assert block_verdicts(b) == {("smoke", "PRIMARY"): "PASS"}
