"""Token data for training: a synthetic Markov source with an exactly known entropy rate, and real text.

`build_data(cfg.data, cache_dir=...)` returns a `TokenData` whose splits are int64 blocks of
seq_len + 1 tokens (inputs = block[:, :-1], targets = block[:, 1:]). Everything is a pure function
of the config (and of the input files' bytes); the expensive parts of real text (the trained BPE
tokenizer and the tokenized tensors) are cached under cache_dir, keyed by a hash of what affects them.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from adrlab.data.base import DataError, TokenData, token_count
from adrlab.data.synthetic import (
    MarkovSource,
    build_synthetic,
    entropy_rate,
    make_source,
    source_from_config,
    stationary_distribution,
)
from adrlab.data.text import build_text

__all__ = [
    "DataError",
    "MarkovSource",
    "TokenData",
    "build_data",
    "build_synthetic",
    "build_text",
    "entropy_rate",
    "make_source",
    "source_from_config",
    "stationary_distribution",
    "token_count",
]


def build_data(cfg: DictConfig, *, cache_dir: Path | str) -> TokenData:
    """Build the splits that the composed run config's `data` node describes."""
    name = cfg.get("name")
    if name == "synthetic":
        return build_synthetic(cfg)
    if name in ("text", "wikitext2"):
        return build_text(cfg, Path(cache_dir))
    raise DataError(f"data.name={name!r} is not a known dataset; choose one of: synthetic, text, wikitext2")
