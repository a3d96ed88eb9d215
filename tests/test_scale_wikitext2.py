"""scale=smoke_wikitext2: the smoke scale on word-level WikiText-2, found from a fresh clone."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from adrlab.config import compose
from adrlab.data import DataError, build_data
from adrlab.data.text import wikitext_sources
from tests.conftest import SHARED_DATA

LINES = ["the cat sat on the mat", "a dog ran in the park", "the end"] * 40


def test_scale_composes_real_text_with_the_smoke_trainer() -> None:
    smoke, real = compose(["scale=smoke"]), compose(["scale=smoke_wikitext2"])
    assert real.scale == "smoke_wikitext2" and real.data.name == "wikitext2"
    assert (real.data.tokenizer, real.data.train_split, real.data.val_split) == ("word", "valid", "test")
    assert real.data.max_train_tokens == 60_000 and real.data.seq_len == smoke.data.seq_len
    # The smoke trainer, cut to 5 epochs: one WikiText-2 epoch costs about five synthetic ones.
    assert {**OmegaConf.to_container(smoke.trainer), "epochs": 5} == OmegaConf.to_container(real.trainer)
    assert OmegaConf.to_container(real.model) == OmegaConf.to_container(smoke.model)
    # The trap of the old experiment=smoke_wikitext2 preset: an arm's preset no longer replaces it.
    arm = compose(["scale=smoke_wikitext2", "experiment=v_rmsuon"])
    assert arm.data.name == "wikitext2" and arm.regularizer.name == "sqrt_v"


def fresh_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_shared: bool) -> Path:
    """<tmp>/adrlab as the project, <tmp>/shared beside it (or not); no ADRLAB_DATA_DIR."""
    project = tmp_path / "adrlab"
    project.mkdir()
    monkeypatch.setenv("ADRLAB_ROOT", str(project))
    monkeypatch.delenv("ADRLAB_DATA_DIR", raising=False)
    if with_shared:
        data = tmp_path / "shared" / "data" / "wikitext-2"
        data.mkdir(parents=True)
        for split in ("valid", "test"):
            (data / f"{split}.txt").write_text("\n".join(LINES) + "\n")
    return project


def test_a_fresh_clone_finds_the_shared_copy_beside_it(tmp_path, monkeypatch) -> None:
    cfg = compose(["scale=smoke_wikitext2"]).data  # composed before ADRLAB_ROOT moves
    fresh_clone(tmp_path, monkeypatch, with_shared=True)
    sources = wikitext_sources(cfg, tmp_path / "cache")
    assert sources.train == [tmp_path / "shared" / "data" / "wikitext-2" / "valid.txt"]
    assert sources.val == [tmp_path / "shared" / "data" / "wikitext-2" / "test.txt"]
    data = build_data(cfg, cache_dir=tmp_path / "cache")
    assert data.info["n_train_tokens"] > 0 and data.vocab_size < 20
    # A relative data.root is taken from the project root when the cwd does not hold it.
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    relative = OmegaConf.merge(cfg, {"root": "../shared/data/wikitext-2"})
    assert wikitext_sources(relative, tmp_path / "cache").train == sources.train


def test_a_fresh_clone_without_the_files_says_where_it_looked(tmp_path, monkeypatch) -> None:
    cfg = compose(["scale=smoke_wikitext2"]).data
    fresh_clone(tmp_path, monkeypatch, with_shared=False)
    with pytest.raises(DataError) as err:
        build_data(cfg, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "wiki.valid.raw or valid.txt" in msg and "wiki.test.raw or test.txt" in msg
    assert f"{tmp_path / 'shared' / 'data' / 'wikitext-2'} (does not exist)" in msg
    assert "data.root=DIR" in msg and "ADRLAB_DATA_DIR" in msg


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data/wikitext-2")
def test_the_shared_slice_is_60k_tokens_of_real_text(runs_dir) -> None:
    data = build_data(compose(["scale=smoke_wikitext2"]).data, cache_dir=runs_dir / "cache")
    assert 59_000 <= data.info["n_train_tokens"] <= 60_000
    assert data.vocab_size > 5_000 and data.entropy_floor_ppl is None
