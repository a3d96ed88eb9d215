"""Training code hash: what the run cache keys on besides the config, and the logged metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adrlab import provenance, tracking
from adrlab import train as train_module
from adrlab.adr.metrics import LOGGED_METRICS, NUMERIC_PARAMS
from adrlab.config import compose
from adrlab.train import train
from tests.conftest import TINY


def test_code_hash_follows_training_modules_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fakepkg"
    (pkg / "optim").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "optim" / "__init__.py").write_text("")
    (pkg / "optim" / "sgd.py").write_text("LR = 1\n")
    (pkg / "report.py").write_text("TITLE = 'a'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(provenance, "TRAINING_MODULES", ("fakepkg.optim",))
    provenance.training_code_hash.cache_clear()
    before = provenance.training_code_hash()
    (pkg / "report.py").write_text("TITLE = 'b'\n")  # report code: not training code
    provenance.training_code_hash.cache_clear()
    assert provenance.training_code_hash() == before
    (pkg / "optim" / "sgd.py").write_text("LR = 2\n")
    provenance.training_code_hash.cache_clear()
    assert provenance.training_code_hash() != before
    (pkg / "optim" / "sgd.py").write_bytes(b"LR = 2\r\n")  # line endings do not count
    provenance.training_code_hash.cache_clear()
    changed = provenance.training_code_hash()
    (pkg / "optim" / "sgd.py").write_text("LR = 2\n")
    provenance.training_code_hash.cache_clear()
    assert provenance.training_code_hash() == changed
    provenance.training_code_hash.cache_clear()
    sys.modules.pop("fakepkg", None)


def test_real_training_modules_exclude_report_code() -> None:
    files = {str(p) for m in provenance.TRAINING_MODULES for _, p in provenance._source_files(m)}
    assert any(f.endswith("train.py") for f in files) and any(f.endswith("model.py") for f in files)
    assert any("optim" in f for f in files) and any("data" in f for f in files)
    assert not any("/adr/" in f or f.endswith("report.py") or f.endswith("cli.py") for f in files)


def test_cache_reuses_only_the_same_code_and_logs_only_known_metrics(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose([*TINY, "optimizer=adamw", "tracking.reuse=true", "trainer.epochs=1"])
    first = train(cfg)
    client = tracking.client(tracking.tracking_uri(cfg))
    run = client.get_run(first.run_id)
    assert run.data.tags[provenance.TAG_CODE_HASH] == provenance.training_code_hash()
    unknown = set(run.data.metrics) - set(LOGGED_METRICS)
    assert not unknown, f"train logs metrics adrlab.adr.metrics does not list: {sorted(unknown)}"
    # What a criterion may divide by (relative_to) is logged, as a number, by every run.
    params = run.data.params
    not_numeric = [k for k in NUMERIC_PARAMS if k not in params or not _is_number(params[k])]
    assert not not_numeric, f"NUMERIC_PARAMS lists params a run does not log as numbers: {not_numeric}"
    assert train(cfg).reused_from == first.run_id  # same config, same code: reused
    monkeypatch.setattr(train_module, "training_code_hash", lambda: "0123456789abcdef")
    third = train(cfg)  # the training code changed: trains again
    assert third.reused_from is None and third.run_id != first.run_id
    assert client.get_run(third.run_id).data.tags[provenance.TAG_CODE_HASH] == "0123456789abcdef"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
