"""``adrlab adr lint``: prose-only ADRs are listed, schema errors carry file:line, nothing is written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from adrlab.adr.lint import ERROR, WARNING, lint
from adrlab.adr.writeback import BEGIN, END

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

PROSE_ADR = """\
---
title: "ADR-0009: prose only"
status: "Proposed"
date: "2025-11-30"
authors: "Ω Researcher"
tags: ["optimizer"]
supersedes: ""
superseded_by: ""
---

# ADR-0009

## 状态 (Status)

Proposed | Accepted | Rejected | Superseded | **Deprecated**

### 理论预测与待观察现象 (Flags to Watch)

1. **[FLAG-1] 长期稳定性**: PPL 不上升。
2. **[FLAG-2] 早期收敛速度**: 见 FLAG-1。

### 成功标准

* **主要标准**: 最终 PPL 更低。
* **次要标准**: 更稳定。
"""

MACHINE_ADR = """\
---
title: "ADR-0010: with criteria"
status: "Proposed"
experiments:
  smoke:
    seeds: [1, 2]
    arms:
      a: ["optimizer=rmsuon"]
      s: {sweep: no_such_sweep}
criteria:
  - id: FLAG-1
    claim: "stable"
    role: flag
    arm: a
    metric: val_ppl
    statistic: final_over_best
    compare: "<="
    threshold: 1.05
---

[FLAG-1] is covered; FLAG-2 is not.
"""


def snapshot(paths: list[Path]) -> dict[Path, tuple[str, int]]:
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the seeds' originals live in ../shared/seeds")
def test_seed_originals_are_listed_and_untouched() -> None:
    files = sorted(SEEDS.glob("000_*.txt")) + sorted(SEEDS.glob("001_*.txt"))
    assert len(files) == 2
    before = snapshot(files)
    messages = lint(files)
    assert snapshot(files) == before
    by_file = {str(p): [m for m in messages if m.path == str(p)] for p in files}
    adr1, adr2 = (by_file[str(p)] for p in files)
    assert [m.severity for m in adr1] == [WARNING]
    assert "prose success criterion (IMP-003)" in adr1[0].message
    assert "FLAG" not in adr1[0].message
    assert adr1[0].message.endswith("missing: criteria, experiments")
    assert [m.severity for m in adr2] == [WARNING]
    assert "prose FLAG-1, FLAG-2, FLAG-3, FLAG-4" in adr2[0].message
    assert "primary/secondary criteria (主要标准, 次要标准)" in adr2[0].message
    assert adr2[0].message.endswith("missing: criteria, experiments")
    text = files[1].read_text(encoding="utf-8")
    assert adr2[0].line == text.splitlines().index("1. **[FLAG-1] 长期稳定性**:") + 1


def test_prose_only_adr_is_listed(tmp_path: Path) -> None:
    p = tmp_path / "0009-prose.md"
    p.write_text(PROSE_ADR, encoding="utf-8")
    before = p.read_bytes()
    messages = lint([p])
    assert p.read_bytes() == before
    lines = PROSE_ADR.splitlines()
    flag_line = lines.index("1. **[FLAG-1] 长期稳定性**: PPL 不上升。") + 1
    status_line = lines.index("Proposed | Accepted | Rejected | Superseded | **Deprecated**") + 1
    assert [str(m) for m in messages] == [
        f"{p}:{flag_line}: warning: prose FLAG-1, FLAG-2 and prose primary/secondary criteria "
        "(主要标准, 次要标准) but no machine-readable criteria; missing: criteria, experiments",
        f"{p}:{status_line}: warning: the body marks status Deprecated but the front matter says Proposed",
    ]


def test_machine_adr_reports_uncovered_flags_and_sweeps(tmp_path: Path) -> None:
    (tmp_path / "adr").mkdir()
    (tmp_path / "sweeps").mkdir()
    p = tmp_path / "adr" / "0010-machine.md"
    p.write_text(MACHINE_ADR, encoding="utf-8")
    messages = lint([tmp_path / "adr"])
    texts = [m.message for m in messages]
    assert "prose FLAG-2 has no machine criterion with id FLAG-2" in texts
    assert "no primary criterion: the verdict cannot recommend a status" in texts
    sweep = [m for m in messages if "no_such_sweep" in m.message]
    assert sweep and sweep[0].line == MACHINE_ADR.splitlines().index("      s: {sweep: no_such_sweep}") + 1
    assert all(m.severity == WARNING for m in messages)


def test_schema_error_has_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "0010-bad.md"
    text = MACHINE_ADR.replace("statistic: final_over_best", "statistic: bestt")
    p.write_text(text, encoding="utf-8")
    messages = lint([p])
    assert len(messages) == 1
    m = messages[0]
    assert m.severity == ERROR
    assert m.line == text.splitlines().index("    statistic: bestt") + 1
    assert str(m).startswith(f"{p}:{m.line}: error: criteria[0].statistic: unknown statistic 'bestt'")
    assert p.read_text(encoding="utf-8") == text


def test_broken_and_edited_blocks(tmp_path: Path) -> None:
    p = tmp_path / "0010-broken.md"
    p.write_text(MACHINE_ADR + f"\n{BEGIN}\n", encoding="utf-8")
    errors = [m for m in lint([p]) if m.severity == ERROR]
    assert [m.message for m in errors] == ["verdict begin marker without an end marker"]
    q = tmp_path / "0011-edited.md"
    # its own number: a second file claiming ADR-0010 would be an error of its own
    q.write_text(
        MACHINE_ADR.replace("ADR-0010", "ADR-0011") + f"\n{BEGIN}\nhand table\n{END}\n", encoding="utf-8"
    )
    errors = [m for m in lint([q]) if m.severity == ERROR]
    assert [m.message for m in errors] == ["verdict block edited by hand (checksum mismatch)"]


def test_directories_skip_readme_and_unreadable_files_do_not_raise(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# ADR format\n\nFLAG-1 in docs\n", encoding="utf-8")
    (tmp_path / "0001-x.md").write_text("no front matter, FLAG-1\n", encoding="utf-8")
    (tmp_path / "0002-y.md").write_bytes(b"---\ntitle: \xff\n---\n")
    messages = lint([tmp_path, tmp_path / "missing.md"])
    assert [(Path(m.path).name, m.line, m.severity) for m in messages] == [
        ("0001-x.md", 1, ERROR),
        ("0002-y.md", 2, ERROR),
        ("missing.md", None, ERROR),
    ]
    assert "missing front matter" in messages[0].message
