"""Executable ADRs: parse and validate, judge criteria from stored runs, write verdicts back."""

from adrlab.adr.document import (
    Adr,
    AdrError,
    Arm,
    Criterion,
    Experiment,
    Statistic,
    parse_adr,
    parse_adr_text,
    set_front_matter_value,
)
from adrlab.adr.lint import LintMessage, lint
from adrlab.adr.verdict import (
    EVIDENCE_COLUMNS,
    FAIL,
    INCONCLUSIVE,
    INVALID,
    NO_DATA,
    PASS,
    AdrVerdict,
    CriterionResult,
    evaluate,
    load_evidence,
    save_evidence,
)
from adrlab.adr.writeback import EditedBlockError, WriteResult, render_block, write_verdict

__all__ = [
    "EVIDENCE_COLUMNS",
    "FAIL",
    "INCONCLUSIVE",
    "INVALID",
    "NO_DATA",
    "PASS",
    "Adr",
    "AdrError",
    "AdrVerdict",
    "Arm",
    "Criterion",
    "CriterionResult",
    "EditedBlockError",
    "Experiment",
    "LintMessage",
    "Statistic",
    "WriteResult",
    "evaluate",
    "lint",
    "load_evidence",
    "parse_adr",
    "parse_adr_text",
    "render_block",
    "save_evidence",
    "set_front_matter_value",
    "write_verdict",
]
