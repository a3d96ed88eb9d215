"""Markdown tables for generated reports (pandas' to_markdown would need tabulate)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd


def cell(value: Any, floatfmt: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".4g") -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v, floatfmt) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_to_markdown(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return markdown_table([str(c) for c in frame.columns], frame.itertuples(index=False, name=None), floatfmt)
