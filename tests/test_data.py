"""Data module: the synthetic source's exact entropy rate, real-text tokenizers, modes, caching, errors."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from adrlab.config import SyntheticDataConfig, TextDataConfig, WikiText2DataConfig, compose
from adrlab.data import (
    DataError,
    MarkovSource,
    build_data,
    entropy_rate,
    make_source,
    source_from_config,
    stationary_distribution,
    token_count,
)
from adrlab.data.synthetic import sub_rng
from adrlab.data.text import pack_lines

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"
needs_wikitext = pytest.mark.skipif(
    not (SHARED / "valid.txt").is_file() or not (SHARED / "test.txt").is_file(),
    reason=f"tokenized WikiText-2 valid/test splits not found in {SHARED}",
)


def synthetic(**kw: object) -> DictConfig:
    return OmegaConf.structured(SyntheticDataConfig(**kw))


def wikitext(**kw: object) -> DictConfig:
    kw = {"root": str(SHARED), "train_split": "valid", "val_split": "test", "tokenizer": "word", **kw}
    return OmegaConf.structured(WikiText2DataConfig(**kw))


# --------------------------------------------------------------------------- synthetic


def test_default_synthetic_is_fast_and_well_formed(tmp_path: Path) -> None:
    cfg = compose([]).data
    start = time.perf_counter()
    data = build_data(cfg, cache_dir=tmp_path / "cache")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"default synthetic data took {elapsed:.2f}s"
    block = cfg.seq_len + 1
    assert data.train.dtype == torch.int64 and data.val.dtype == torch.int64
    assert data.train.shape == (cfg.train_tokens // block, block)
    assert data.val.shape == (cfg.val_tokens // block, block)
    assert data.vocab_size == cfg.vocab_size and data.pad_id is None
    assert int(data.train.max()) < data.vocab_size and int(data.train.min()) >= 0
    assert data.info["n_train_tokens"] == data.train.shape[0] * cfg.seq_len
    assert data.info["n_val_tokens"] == token_count(data.val[:, 1:], None)
    assert data.info["n_train_blocks"] == data.train.shape[0]
    assert data.entropy_floor_ppl == pytest.approx(np.exp(data.info["entropy_rate_nats"]))
    assert 1.0 < data.entropy_floor_ppl < cfg.branching * 2
    assert not torch.equal(data.train[: data.val.shape[0]], data.val)  # independent samples


def test_synthetic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = build_data(synthetic(), cache_dir=tmp_path)
    b = build_data(synthetic(), cache_dir=tmp_path)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert a.entropy_floor_ppl == b.entropy_floor_ppl
    c = build_data(synthetic(source_seed=99), cache_dir=tmp_path)
    assert not torch.equal(a.train, c.train)
    assert a.entropy_floor_ppl != c.entropy_floor_ppl
    # The chain does not depend on how much is sampled from it.
    d = build_data(synthetic(train_tokens=30_000), cache_dir=tmp_path)
    assert torch.equal(d.train, a.train[: d.train.shape[0]])
    assert d.entropy_floor_ppl == a.entropy_floor_ppl


def test_source_structure() -> None:
    src = make_source(64, 1, 5, 1.1, seed=3)
    assert src.successors.shape == (64, 5) and src.probs.shape == (64, 5)
    assert all(len(set(row)) == 5 for row in src.successors.tolist())  # distinct successors
    assert np.allclose(src.probs.sum(axis=1), 1.0)
    # Zipf-like: popular tokens are chosen as successors more often.
    indegree = np.bincount(src.successors.ravel(), minlength=64)
    assert indegree[:8].sum() > indegree[-8:].sum()
    with pytest.raises(DataError, match="branching"):
        make_source(8, 1, 9, 1.0, seed=0)


def _dense_entropy(src: MarkovSource) -> float:
    """Brute force: the full transition matrix over contexts, π from an eigenvector."""
    V, n = src.vocab_size, src.n_contexts
    nxt = np.tile(src.restart * src.popularity, (n, 1))
    np.add.at(nxt, (np.arange(n)[:, None], src.successors), (1 - src.restart) * src.probs)
    T = np.zeros((n, n))
    for ctx in range(n):
        targets = np.arange(V) if src.order == 1 else (ctx % V) * V + np.arange(V)
        T[ctx, targets] += nxt[ctx]
    w, v = np.linalg.eig(T.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    assert np.allclose(pi, stationary_distribution(src), atol=1e-10)
    return float(-(pi[:, None] * nxt * np.log(nxt)).sum())


@pytest.mark.parametrize("order", [1, 2])
def test_entropy_rate_closed_form_equals_brute_force(order: int) -> None:
    src = make_source(12, order, 3, 1.0, seed=7)
    assert entropy_rate(src) == pytest.approx(_dense_entropy(src), rel=1e-10)


@pytest.mark.parametrize(
    ("overrides", "n"),
    [({}, 200_000), ({"order": 2, "vocab_size": 48, "branching": 4}, 200_000)],
)
def test_entropy_rate_matches_empirical_estimate(overrides: dict, n: int) -> None:
    src = source_from_config(synthetic(**overrides))
    sample = src.sample(n, sub_rng(2024, 9))
    empirical = float(-src.log_prob(sample).mean())
    h = entropy_rate(src)
    assert empirical == pytest.approx(h, rel=0.01)
    # The sample is stationary: its unigram frequencies match π's token marginal.
    marginal = src.stationary.reshape(-1, src.vocab_size).sum(axis=0)
    freq = np.bincount(sample, minlength=src.vocab_size) / n
    assert np.abs(freq - marginal).sum() < 0.05


def test_synthetic_too_short_split_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="val split has 40 tokens"):
        build_data(synthetic(val_tokens=40), cache_dir=tmp_path)


# --------------------------------------------------------------------------- helpers


def test_token_count_and_pack_lines() -> None:
    targets = torch.tensor([[5, 6, 0, 0], [7, 8, 9, 0]])
    assert token_count(targets, 0) == 5 and token_count(targets, None) == 8
    eos, pad = 1, 0
    lines = [[2, 3, eos], [4, eos], [5, 6, 7, 8, 9, 10, eos], [*range(11, 20), eos], [20, eos]]
    rows = pack_lines(lines, 6, pad).tolist()
    assert rows == [
        [2, 3, eos, 4, eos, pad],  # two whole lines; the next one does not fit: padded
        [5, 6, 7, 8, 9, 10],  # a line longer than a block spans full blocks; its 1-token tail
        [11, 12, 13, 14, 15, 16],  # ([eos], no target) is dropped, the next long line starts fresh
        [17, 18, 19, eos, 20, eos],  # and its tail stays open for the next line
    ]


# --------------------------------------------------------------------------- WikiText-2 (local)


@needs_wikitext
def test_wikitext_word_chunk(tmp_path: Path) -> None:
    cfg = compose(
        [
            "data=wikitext2",
            f"data.root={SHARED}",
            "data.tokenizer=word",
            "data.train_split=valid",
            "data.val_split=test",
        ]
    ).data
    data = build_data(cfg, cache_dir=tmp_path / "cache")
    block = cfg.seq_len + 1
    assert data.train.shape[1] == block and data.val.shape[1] == block
    assert 10_000 < data.vocab_size < 30_000
    assert data.pad_id is None and data.entropy_floor_ppl is None
    assert int(data.val.max()) < data.vocab_size and int(data.train.max()) < data.vocab_size
    assert not bool((data.train == 0).any()) and not bool((data.val == 0).any())  # <pad> = 0 never appears
    assert data.info["n_train_tokens"] == data.train.shape[0] * cfg.seq_len
    assert 200_000 < data.info["n_train_tokens"] < 230_000
    assert "tokenized" in str(data.info["source"]) and "valid.txt" in str(data.info["source"])
    assert 0.0 < data.info["val_unk_rate"] < 0.2
    again = build_data(cfg, cache_dir=tmp_path / "other")  # rebuilt from scratch: identical
    assert torch.equal(again.train, data.train) and torch.equal(again.val, data.val)


@needs_wikitext
def test_wikitext_word_line_mode_pads_only_after_lines(tmp_path: Path) -> None:
    data = build_data(wikitext(mode="line"), cache_dir=tmp_path)
    pad = data.pad_id
    assert pad == 0
    for split in (data.train, data.val):
        is_pad = split == pad
        assert bool(is_pad.any())
        # Pads only fill the end of a block, and every block has a real target.
        assert bool((is_pad[:, 1:] >= is_pad[:, :-1]).all())
        assert bool((~is_pad[:, 1]).all())
    assert data.info["n_val_tokens"] == token_count(data.val[:, 1:], pad)
    assert data.info["n_train_tokens"] < data.train.shape[0] * (data.train.shape[1] - 1)
    assert int(data.val.max()) < data.vocab_size


@needs_wikitext
def test_wikitext_max_tokens_cut_before_blocking(tmp_path: Path) -> None:
    data = build_data(wikitext(max_train_tokens=6_500, max_val_tokens=1_300), cache_dir=tmp_path)
    assert data.train.shape == (100, 65) and data.val.shape == (20, 65)
    full = build_data(wikitext(), cache_dir=tmp_path)
    assert data.vocab_size < full.vocab_size  # the vocabulary comes from the train tokens used


@needs_wikitext
def test_wikitext_bpe_trains_and_caches(tmp_path: Path) -> None:
    cfg = wikitext(tokenizer="bpe", vocab_size=2000, max_val_tokens=20_000)
    first = build_data(cfg, cache_dir=tmp_path)
    assert first.info["cache"] == "built"
    assert first.vocab_size == 2000 and first.pad_id is None
    assert int(first.val.max()) < 2000 and int(first.train.max()) < 2000
    assert list((tmp_path / "tokenizers").glob("bpe-*.json"))
    start = time.perf_counter()
    second = build_data(cfg, cache_dir=tmp_path)
    assert time.perf_counter() - start < 0.5
    assert second.info["cache"] == "hit"
    assert torch.equal(first.train, second.train) and torch.equal(first.val, second.val)
    # The tokenizer is reused when only the blocking changes.
    line = build_data(wikitext(tokenizer="bpe", vocab_size=2000, mode="line"), cache_dir=tmp_path)
    assert line.pad_id == 0 and line.vocab_size == 2000
    assert len(list((tmp_path / "tokenizers").glob("bpe-*.json"))) == 1


# --------------------------------------------------------------------------- text files


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_text_files_word_byte_bpe(tmp_path: Path) -> None:
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    rng = np.random.default_rng(0)
    train = write_lines(
        tmp_path / "train.txt",
        [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(300)] + ["", "   "],
    )
    val = write_lines(tmp_path / "val.txt", ["the zebra sat on a mat"] * 40)
    base = {"train_files": [str(train)], "val_files": [str(val)], "seq_len": 16}

    word = build_data(OmegaConf.structured(TextDataConfig(**base)), cache_dir=tmp_path / "c")
    assert word.vocab_size == 3 + len(words)  # <pad>, <eos>, <unk> + the words
    assert bool((word.val == 2).any())  # "zebra" is unseen: <unk>
    assert word.info["tokenizer"] == "word" and word.info["cache"] == "built"

    byte_cfg = OmegaConf.structured(TextDataConfig(**base, tokenizer="byte", mode="line"))
    byte = build_data(byte_cfg, cache_dir=tmp_path)
    assert byte.vocab_size == 258 and byte.pad_id == 256
    real = byte.val[byte.val != 256]
    assert bytes(t for t in real.tolist() if t < 256).decode() == "the zebra sat on a mat" * 40

    bpe_cfg = OmegaConf.structured(TextDataConfig(**base, tokenizer="bpe", vocab_size=300))
    bpe_a = build_data(bpe_cfg, cache_dir=tmp_path / "a")
    bpe_b = build_data(bpe_cfg, cache_dir=tmp_path / "b")  # trained again from scratch: same result
    assert torch.equal(bpe_a.train, bpe_b.train) and bpe_a.vocab_size == bpe_b.vocab_size <= 300
    json_a = next((tmp_path / "a" / "tokenizers").glob("*.json")).read_text()
    json_b = next((tmp_path / "b" / "tokenizers").glob("*.json")).read_text()
    assert json_a == json_b


def test_text_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train_files is empty"):
        build_data(OmegaConf.structured(TextDataConfig()), cache_dir=tmp_path)
    cfg = OmegaConf.structured(TextDataConfig(train_files=[str(tmp_path / "nope.txt")], val_files=["x"]))
    with pytest.raises(DataError, match=r"nope\.txt"):
        build_data(cfg, cache_dir=tmp_path)
    empty = write_lines(tmp_path / "empty.txt", ["", " "])
    cfg = OmegaConf.structured(TextDataConfig(train_files=[str(empty)], val_files=[str(empty)]))
    with pytest.raises(DataError, match="no text"):
        build_data(cfg, cache_dir=tmp_path)
    short = write_lines(tmp_path / "short.txt", ["a b c"])
    cfg = OmegaConf.structured(TextDataConfig(train_files=[str(short)], val_files=[str(short)]))
    with pytest.raises(DataError, match="fewer than one block"):
        build_data(cfg, cache_dir=tmp_path)


# --------------------------------------------------------------------------- WikiText-2 discovery


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root (and data dir) with no WikiText-2 anywhere, so the search is hermetic."""
    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.setenv("ADRLAB_ROOT", str(project))
    monkeypatch.setenv("ADRLAB_DATA_DIR", str(tmp_path / "datadir"))
    return tmp_path


def test_wikitext_missing_lists_searched_paths(isolated: Path) -> None:
    cfg = OmegaConf.structured(WikiText2DataConfig(tokenizer="word"))
    with pytest.raises(DataError) as err:
        build_data(cfg, cache_dir=isolated / "cache")
    msg = str(err.value)
    for path in (
        isolated / "datadir" / "wikitext-2",
        isolated / "proj" / "data" / "wikitext-2",
        isolated / "shared" / "data" / "wikitext-2",
    ):
        assert str(path) in msg
    assert "wiki.train.raw or train.txt" in msg
    for option in ("data.root=DIR", "ADRLAB_DATA_DIR", "data.download=true", "data.train_split"):
        assert option in msg
    cfg = OmegaConf.structured(WikiText2DataConfig(root=str(isolated / "nowhere")))
    with pytest.raises(DataError, match=r"data\.root: .*nowhere \(does not exist\)"):
        build_data(cfg, cache_dir=isolated / "cache")


def test_wikitext_reports_partial_directory(isolated: Path) -> None:
    folder = isolated / "datadir" / "wikitext-2"
    folder.mkdir(parents=True)
    write_lines(folder / "valid.txt", ["a b"])
    with pytest.raises(DataError, match=r"has valid\.txt"):
        build_data(OmegaConf.structured(WikiText2DataConfig()), cache_dir=isolated / "cache")


def test_wikitext_prefers_raw_files(isolated: Path) -> None:
    folder = isolated / "datadir" / "wikitext-2"
    folder.mkdir(parents=True)
    for split in ("valid", "test"):
        write_lines(folder / f"{split}.txt", ["tokenized <unk> text"] * 50)
        write_lines(folder / f"wiki.{split}.raw", ["raw original text"] * 50)
    cfg = OmegaConf.structured(
        WikiText2DataConfig(tokenizer="word", train_split="valid", val_split="test", seq_len=8)
    )
    data = build_data(cfg, cache_dir=isolated / "cache")
    assert "(raw)" in str(data.info["source"]) and "wiki.valid.raw" in str(data.info["source"])
    assert data.vocab_size == 3 + 3  # raw, original, text


def test_wikitext_download_offline_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    cfg = OmegaConf.structured(WikiText2DataConfig(download=True))
    with pytest.raises(DataError) as err:
        build_data(cfg, cache_dir=isolated / "cache")
    msg = str(err.value)
    assert "failed" in msg and "no network" in msg and "data.root=DIR" in msg and "wiki.train.raw" in msg


def test_wikitext_download_parquet_then_reuse(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download path with a fake hub: parquet `text` rows become lines; a second build needs no hub."""
    import huggingface_hub
    import pandas as pd

    calls = itertools.count()

    def fake(repo_id: str, filename: str, *, repo_type: str, local_dir: Path) -> str:
        assert repo_id == "Salesforce/wikitext" and repo_type == "dataset"
        next(calls)
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = ["", " = Title = \n", "", " some words here and there \n"] * 30
        pd.DataFrame({"text": rows}).to_parquet(path)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    cfg = OmegaConf.structured(WikiText2DataConfig(download=True, tokenizer="word", seq_len=8))
    data = build_data(cfg, cache_dir=isolated / "cache")
    assert next(calls) == 2  # train and valid
    assert data.vocab_size == 3 + 7
    assert int(data.train.max()) < data.vocab_size
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", None)  # would fail if called
    again = build_data(cfg, cache_dir=isolated / "cache")
    assert torch.equal(again.train, data.train)
    assert "parquet" in str(again.info["source"])
