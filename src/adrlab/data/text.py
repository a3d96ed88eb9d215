"""Real text (`text` files or WikiText-2): word, byte-level BPE or byte tokens, chunked or line-packed."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from adrlab.config import project_root
from adrlab.data.base import DataError, TokenData, chunk_blocks, token_count

# Bump when the cached products' format or the way they are made changes.
CACHE_VERSION = 1
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
BYTE_PAD, BYTE_EOS = 256, 257
# Directory layouts a WikiText-2 folder may have, in order of preference (raw beats tokenized).
WIKI_FORMATS = (
    ("raw", "wiki.{split}.raw"),
    ("tokenized", "{split}.txt"),
    ("parquet", "{hf}-00000-of-00001.parquet"),  # as fetched from the Hugging Face hub
)
HF_REPO, HF_CONFIG = "Salesforce/wikitext", "wikitext-2-raw-v1"
HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text file (or of the `text` column of a Hugging Face parquet file)."""
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path, columns=["text"])["text"].tolist()
    else:
        try:
            rows = path.read_bytes().decode("utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text ({exc}); convert it or leave it out") from None
    lines = [row.rstrip("\r\n") for row in rows]
    return [line for line in lines if line.strip()]


def _atomic_save(obj: Any, path: Path) -> None:
    """Write then rename, so parallel sweep workers never read a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(obj, str):
        tmp.write_text(obj, encoding="utf-8")
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- locating files


@dataclass
class Sources:
    train: list[Path]
    val: list[Path]
    description: str


def text_sources(cfg: DictConfig) -> Sources:
    """data=text: train_files / val_files, relative paths taken from the cwd, then the project root."""
    root = project_root()

    def resolve(key: str) -> list[Path]:
        names = list(cfg.get(key) or [])
        if not names:
            raise DataError(
                f"data.{key} is empty; data=text needs plain-text files, "
                "e.g. data.train_files=[train.txt] data.val_files=[valid.txt]"
            )
        out = []
        for name in names:
            tried = [Path(str(name)).expanduser()]
            if not tried[0].is_absolute():
                tried.append(root / str(name))
            found = next((p for p in tried if p.is_file()), None)
            if found is None:
                raise DataError(f"data.{key}: {name!r} not found (looked at {', '.join(map(str, tried))})")
            out.append(found.resolve())
        return out

    train, val = resolve("train_files"), resolve("val_files")
    return Sources(train, val, f"text train={[str(p) for p in train]} val={[str(p) for p in val]}")


def _split_files(directory: Path, splits: tuple[str, ...]) -> tuple[str, dict[str, Path]] | None:
    """The first format (raw preferred) that has every needed split in this directory."""
    for fmt, pattern in WIKI_FORMATS:
        files = {s: directory / pattern.format(split=s, hf=HF_SPLITS[s]) for s in splits}
        if all(f.is_file() for f in files.values()):
            return fmt, files
    return None


def _describe_dir(directory: Path) -> str:
    if not directory.is_dir():
        return "does not exist"
    names = sorted(p.name for p in directory.iterdir() if p.suffix in (".raw", ".txt", ".parquet"))
    return f"has {', '.join(names)}" if names else "holds no wiki.*.raw or *.txt files"


def wikitext_candidates(cfg: DictConfig) -> list[tuple[str, Path | None]]:
    """(label, directory) in search order; None where the location is undefined (env var unset)."""
    root = project_root()
    if cfg.get("root"):
        given = Path(str(cfg.root)).expanduser()
        if given.is_absolute():
            return [("data.root", given)]
        # Relative: from the cwd, then from the project root (the same run works from anywhere).
        return [
            ("data.root (from the cwd)", given),
            ("data.root (from the project root)", (root / given).resolve()),
        ]
    env = os.environ.get("ADRLAB_DATA_DIR")
    return [
        ("$ADRLAB_DATA_DIR/wikitext-2", Path(env).expanduser() / "wikitext-2" if env else None),
        ("<project>/data/wikitext-2", root / "data" / "wikitext-2"),
        ("<project>/../shared/data/wikitext-2", root.parent / "shared" / "data" / "wikitext-2"),
    ]


def wikitext_sources(cfg: DictConfig, cache_dir: Path) -> Sources:
    splits = (str(cfg.train_split), str(cfg.val_split))
    needed = tuple(dict.fromkeys(splits))
    download_dir = cache_dir / "downloads" / HF_CONFIG
    searched = []
    for label, directory in [*wikitext_candidates(cfg), ("earlier download", download_dir)]:
        found = _split_files(directory, needed) if directory is not None else None
        if found is not None:
            fmt, files = found
            train, val = files[splits[0]], files[splits[1]]
            desc = f"wikitext2 ({fmt}) at {directory}: train={train.name}, val={val.name}"
            return Sources([train], [val], desc)
        if label != "earlier download":
            where = f"{directory} ({_describe_dir(directory)})" if directory else "not set"
            searched.append(f"  - {label}: {where}")
    wanted = ", ".join(f"wiki.{s}.raw or {s}.txt" for s in needed)
    if cfg.get("download"):
        files = _download_wikitext(download_dir, needed, wanted)
        desc = f"wikitext2 (raw, downloaded from {HF_REPO}) at {download_dir}"
        return Sources([files[splits[0]]], [files[splits[1]]], desc)
    raise DataError(
        f"WikiText-2 not found: need the splits {', '.join(needed)} (data.train_split={splits[0]}, "
        f"data.val_split={splits[1]}) as {wanted}. Searched:\n" + "\n".join(searched) + "\n"
        "Options: pass data.root=DIR (a directory holding those files), set ADRLAB_DATA_DIR (its "
        "wikitext-2/ subfolder is searched), pass data.download=true to fetch raw WikiText-2 from the "
        "Hugging Face hub, or pick splits that exist (data.train_split / data.val_split: train, valid, test)."
    )


def _download_wikitext(directory: Path, splits: tuple[str, ...], wanted: str) -> dict[str, Path]:
    import huggingface_hub

    files = {}
    for split in splits:
        filename = f"{HF_CONFIG}/{HF_SPLITS[split]}-00000-of-00001.parquet"
        try:
            path = huggingface_hub.hf_hub_download(
                HF_REPO, filename, repo_type="dataset", local_dir=directory.parent
            )
        except Exception as exc:  # offline, proxy or hub errors all end the same way for the user
            raise DataError(
                f"downloading WikiText-2 ({HF_REPO}, {filename}) from the Hugging Face hub failed: "
                f"{type(exc).__name__}: {str(exc).rstrip('. ')}. Provide local files instead: "
                f"data.root=DIR where DIR holds {wanted} (or put them in $ADRLAB_DATA_DIR/wikitext-2)."
            ) from None
        files[split] = Path(path)
    return files


# --------------------------------------------------------------------------- tokenizers, blocking


def word_vocab(lines: list[list[str]], min_frequency: int) -> list[str]:
    """Specials first, then the train words by descending count (ties alphabetical: deterministic)."""
    counts = Counter(w for line in lines for w in line)
    words = [w for w, c in counts.items() if c >= min_frequency and w not in (PAD, EOS, UNK)]
    return [PAD, EOS, UNK, *sorted(words, key=lambda w: (-counts[w], w))]


def bpe_tokenizer(lines: list[str], train_hash: str, cfg: DictConfig, cache_dir: Path) -> tuple[Any, Path]:
    """Byte-level BPE trained on the train split; cached as JSON keyed by everything that shapes it."""
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    vocab_size, min_frequency = int(cfg.vocab_size), int(cfg.min_frequency)
    key = _key([CACHE_VERSION, train_hash, vocab_size, min_frequency, tokenizers.__version__])
    path = cache_dir / "tokenizers" / f"bpe-{key}.json"
    if path.is_file():
        return Tokenizer.from_file(str(path)), path
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    _atomic_save(tok.to_str(), path)
    return tok, path


def cut(lines: list[list[Any]], limit: int | None) -> list[list[Any]]:
    """Keep the first `limit` tokens of the stream (the last line may be cut short)."""
    if limit is None:
        return lines
    out, total = [], 0
    for line in lines:
        if total >= limit:
            break
        out.append(line[: limit - total])
        total += len(out[-1])
    return out


def pack_lines(lines: list[list[int]], block: int, pad_id: int) -> np.ndarray:
    """Greedy packing of whole lines into padded blocks; only a line longer than a block is split."""
    rows: list[list[int]] = []
    cur: list[int] = []

    def flush() -> None:
        if len(cur) >= 2:  # a block needs at least one real target
            rows.append(cur + [pad_id] * (block - len(cur)))
        cur.clear()

    for line in lines:
        if len(line) <= block - len(cur):
            cur.extend(line)
            continue
        flush()
        if len(line) <= block:
            cur.extend(line)
            continue
        n_full = len(line) // block
        rows.extend(line[i * block : (i + 1) * block] for i in range(n_full))
        cur.extend(line[n_full * block :])  # the tail stays open for the next lines
    flush()
    return np.asarray(rows, dtype=np.int64).reshape(-1, block)


def _tokenize(
    cfg: DictConfig, train_lines: list[str], val_lines: list[str], train_hash: str, cache_dir: Path
) -> tuple[list[list[int]], list[list[int]], int, int, dict[str, Any]]:
    """Token ids per line (each ending in <eos>), cut to max_*_tokens; vocab size, pad id, extras."""
    tokenizer = str(cfg.tokenizer)
    max_train, max_val = cfg.get("max_train_tokens"), cfg.get("max_val_tokens")
    if tokenizer == "word":
        # The vocabulary comes from the train tokens actually used (after max_train_tokens).
        train_words = cut([[*line.split(), EOS] for line in train_lines], max_train)
        vocab = word_vocab(train_words, int(cfg.min_frequency))
        stoi = {w: i for i, w in enumerate(vocab)}
        unk = stoi[UNK]
        train_ids = [[stoi.get(w, unk) for w in line] for line in train_words]
        val_words = cut([[*line.split(), EOS] for line in val_lines], max_val)
        val_ids = [[stoi.get(w, unk) for w in line] for line in val_words]
        n_val = sum(map(len, val_ids))
        unk_rate = sum(line.count(unk) for line in val_ids) / max(n_val, 1)
        extra = {"tokenizer": "word", "val_unk_rate": unk_rate, "vocab": vocab}
        return train_ids, val_ids, len(vocab), stoi[PAD], extra
    if tokenizer == "bpe":
        bpe, path = bpe_tokenizer(train_lines, train_hash, cfg, cache_dir)
        eos = bpe.token_to_id(EOS)
        train_ids = cut([[*e.ids, eos] for e in bpe.encode_batch(train_lines)], max_train)
        val_ids = cut([[*e.ids, eos] for e in bpe.encode_batch(val_lines)], max_val)
        return train_ids, val_ids, bpe.get_vocab_size(), bpe.token_to_id(PAD), {"tokenizer": f"bpe:{path}"}
    # byte: ids 0..255 are the UTF-8 bytes, then <pad>, <eos>
    train_ids = cut([[*line.encode("utf-8"), BYTE_EOS] for line in train_lines], max_train)
    val_ids = cut([[*line.encode("utf-8"), BYTE_EOS] for line in val_lines], max_val)
    return train_ids, val_ids, BYTE_EOS + 1, BYTE_PAD, {"tokenizer": "byte"}


def build_text(cfg: DictConfig, cache_dir: Path) -> TokenData:
    start = time.perf_counter()
    cache_dir = _pinned_cache_dir(cfg, cache_dir)
    sources = wikitext_sources(cfg, cache_dir) if cfg.name == "wikitext2" else text_sources(cfg)
    train_hashes, val_hashes = [_sha256(p) for p in sources.train], [_sha256(p) for p in sources.val]
    key = _key([CACHE_VERSION, train_hashes, val_hashes, _token_settings(cfg)])
    cache_file = cache_dir / "tokens" / f"{cfg.name}-{cfg.tokenizer}-{cfg.mode}-{key}.pt"
    if cache_file.is_file():
        try:
            saved = torch.load(cache_file, weights_only=True)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            saved = None
        if saved is not None:
            elapsed = time.perf_counter() - start
            info = {**saved["info"], "source": sources.description, "cache": "hit", "build_seconds": elapsed}
            return TokenData(saved["train"], saved["val"], saved["vocab_size"], saved["pad_id"], None, info)

    train_lines = [line for p in sources.train for line in _read_lines(p)]
    val_lines = [line for p in sources.val for line in _read_lines(p)]
    for split, lines, paths in (("train", train_lines, sources.train), ("val", val_lines, sources.val)):
        if not lines:
            names = ", ".join(map(str, paths))
            raise DataError(f"the {split} split has no text: every line of {names} is empty")
    train_ids, val_ids, vocab_size, pad_id, extra = _tokenize(
        cfg, train_lines, val_lines, _key(train_hashes), cache_dir
    )
    vocab = extra.pop("vocab", None)
    train, val, pad, info = _to_blocks(cfg, train_ids, val_ids, pad_id)
    info.update(extra)
    saved = {"train": train, "val": val, "vocab_size": vocab_size, "pad_id": pad, "info": info}
    if vocab is not None:
        saved["vocab"] = vocab  # kept for decoding and inspection
    _atomic_save(saved, cache_file)
    elapsed = time.perf_counter() - start
    info = {**info, "source": sources.description, "cache": "built", "build_seconds": elapsed}
    return TokenData(train, val, vocab_size, pad, None, info)


def _pinned_cache_dir(cfg: DictConfig, cache_dir: Path) -> Path:
    """The config may pin its own cache (relative: to the project root)."""
    if not cfg.get("cache_dir"):
        return cache_dir
    pinned = Path(str(cfg.cache_dir)).expanduser()
    if not pinned.is_absolute():
        pinned = project_root() / pinned
    return pinned


def _token_settings(cfg: DictConfig) -> dict[str, Any]:
    """The data settings that shape the tokens; where the bytes came from is covered by the
    content hashes of the files."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(settings, dict)
    for unused in (
        "name",
        "train_files",
        "val_files",
        "root",
        "download",
        "cache_dir",
        "train_split",
        "val_split",
    ):
        settings.pop(unused, None)
    if cfg.tokenizer != "bpe":
        settings.pop("vocab_size", None)
    return settings


def _to_blocks(
    cfg: DictConfig, train_ids: list[list[int]], val_ids: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, int | None, dict[str, Any]]:
    """Token lines → (train, val) blocks of seq_len + 1, the pad id (None when chunked: no
    padding), and the size info."""
    block = int(cfg.seq_len) + 1
    hint = "use more text, a smaller data.seq_len, or a larger data.max_train_tokens / max_val_tokens"
    if cfg.mode == "chunk":
        pad = None
        train = chunk_blocks(np.fromiter((t for ln in train_ids for t in ln), np.int64), block, "train", hint)
        val = chunk_blocks(np.fromiter((t for ln in val_ids for t in ln), np.int64), block, "val", hint)
    else:
        pad = pad_id
        train = torch.from_numpy(pack_lines(train_ids, block, pad_id))
        val = torch.from_numpy(pack_lines(val_ids, block, pad_id))
        for split, rows in (("train", train), ("val", val)):
            if rows.shape[0] == 0:
                raise DataError(f"the {split} split has no line of 2 or more tokens; {hint}")
    n_train = token_count(train[:, 1:], pad)
    info: dict[str, Any] = {
        "n_train_tokens": n_train,
        "n_val_tokens": token_count(val[:, 1:], pad),
        "n_train_blocks": train.shape[0],
        "n_val_blocks": val.shape[0],
        "mode": str(cfg.mode),
        "pad_fraction": 1.0 - n_train / (train.shape[0] * (block - 1)),
    }
    return train, val, pad, info
