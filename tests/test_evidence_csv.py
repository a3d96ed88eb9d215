"""The evidence CSV writer: its direct path must write exactly what csv.writer writes."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adrlab.adr.verdict import (
    EVIDENCE_COLUMNS,
    PROVENANCE_COLUMNS,
    _cell,
    _write_csv_rows,
    _x_text,
    save_evidence,
    sort_evidence,
)


def _csv_writer_text(header: list[str], columns: list[list[str]]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*columns, strict=True))
    return buf.getvalue()


def _fast_text(header: list[str], columns: list[list[str]]) -> str:
    buf = io.StringIO(newline="")
    _write_csv_rows(buf, header, columns)
    return buf.getvalue()


CELLS = ["plain", "", "a,b", 'say "hi"', '"', "line\nbreak", "cr\rx", "crlf\r\n", "é ü 中", " pad ", "nan"]


@pytest.mark.parametrize("cell", CELLS)
def test_direct_writer_equals_csv_writer(cell: str) -> None:
    columns = [["x", cell, "y"], [cell, "", "z"], ["1", "2", cell]]
    assert _fast_text(["a", "b", "c"], columns) == _csv_writer_text(["a", "b", "c"], columns)


@pytest.mark.parametrize(
    ("header", "columns"),
    [
        (["a", "b"], [[], []]),  # no rows
        (["a"], [["", "x"]]),  # one column: csv.writer quotes a lone empty cell
        (["a,b", "c"], [["1"], ["2"]]),  # the header needs quoting
        (["a", "b"], [["1"] * 100_000, [str(i) for i in range(100_000)]]),  # more than one chunk
    ],
)
def test_direct_writer_edge_shapes(header: list[str], columns: list[list[str]]) -> None:
    assert _fast_text(header, columns) == _csv_writer_text(header, columns)


def _reference_csv(evidence: pd.DataFrame) -> str:
    """What save_evidence wrote before its direct path: every cell formatted on its own, then
    csv.writer (a str column's missing value reaches it as a float NaN)."""
    ev = sort_evidence(evidence)
    strings = ("run_id", "arm", "status", "kind", "metric", *PROVENANCE_COLUMNS)
    text: dict[str, list] = {col: ev[col].astype(str).tolist() for col in strings}
    text["seed"] = [_cell(v) for v in ev["seed"].tolist()]
    text["x"] = [_x_text(v) for v in ev["x"].tolist()]
    text["value"] = [repr(v) if type(v) is float else _cell(v) for v in ev["value"].tolist()]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EVIDENCE_COLUMNS)
    writer.writerows(zip(*(text[c] for c in EVIDENCE_COLUMNS), strict=True))
    return buf.getvalue()


def _frame(n: int = 12, **columns: object) -> pd.DataFrame:
    base: dict[str, object] = {
        "run_id": [f"r{i % 3}" for i in range(n)],
        "arm": ["a" if i % 2 else "b" for i in range(n)],
        "seed": [i % 4 for i in range(n)],
        "status": ["FINISHED"] * n,
        "kind": ["step"] * n,
        "metric": ["loss"] * n,
        "x": [float(i) for i in range(n)],
        "value": [0.1 * i for i in range(n)],
    }
    return pd.DataFrame(base | columns)


NAN, INF = math.nan, math.inf
FRAMES = {
    "plain": _frame(),
    "x": _frame(x=[NAN, 2.5, 1e20, -0.0, 0.0, INF, -INF, 1e-7, 3, 1.2345678901234568e17, -2.0, None]),
    "values": _frame(value=[INF, -INF, NAN, 1e-05, 0.1, -0.0, 1e16, 1e300, 5e-324, 2.0, 1 / 3, None]),
    "object values": _frame(
        value=pd.Series(
            ["adamw", "a,b", 'say "hi"', "line\nbreak", "cr\rx", "", None, True, np.float64(0.5), 3, NAN, 2],
            dtype=object,
        )
    ),
    "plain object values": _frame(
        value=pd.Series(
            ["adamw", "sgd", 1.5, 2.0, np.float32(0.1), np.int64(7), False, None, NAN, "x y", "é", 0.0]
        )
    ),
    "seeds with NA": _frame(seed=pd.array([1, None, 3, 2, None, 1, 1, 2, 3, 4, 5, 6], dtype="Int64")),
    "seeds as text": _frame(seed=["1", "2", None, "3", "4", "5", "x", 1.0, 2, 3, 4, 5]),
    "x as text": _frame(x=["1", "2.5", "", "abc", None, "1e3", "7", "8", "9", "10", "11", "-0"]),
    "missing names": _frame(
        run_id=["r1", None, "r2", NAN, "r,1", 'r"q', "r\nn", "", "ü", "r1", "r2", "r3"],
        metric=["m"] * 11 + [None],
        arm=pd.Series(["a"] * 6 + [None] * 6, dtype="string"),
    ),
    "metric with comma": _frame(metric=["a,b"] * 12),
    "provenance": _frame().assign(
        scale=["paper", None, "", "smoke"] * 3,
        git_sha=["abc", "", None, "d,e"] * 3,
        config_hash=[1, 2, 3, None] * 3,
    ),
    "no rows": _frame(0),
    "one row": _frame(1),
}


@pytest.mark.parametrize("name", list(FRAMES))
def test_save_evidence_writes_what_csv_writer_wrote(name: str, tmp_path: Path) -> None:
    path = save_evidence(FRAMES[name], tmp_path / "runs.csv")
    assert path.read_bytes() == _reference_csv(FRAMES[name]).encode("utf-8")
