"""`adrlab report` across scales, history and --diff, in a clone without any runs."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import adrlab.adr.report as report_mod
from adrlab.adr.history import MAX_DIFF_CHARS, _diff_text, verdict_diff
from adrlab.adr.report import run_report
from adrlab.adr.verdict import UNKNOWN, load_evidence
from adrlab.adr.writeback import block_verdicts, find_block

ROOT = Path(__file__).resolve().parents[1]
VERDICT_WORDS = ("**PASS**", "**FAIL**", "**INCONCLUSIVE**", "**INVALID**")


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout with ADR-0001 and its committed smoke snapshot, and an empty run store."""
    for folder in ("conf", "sweeps"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "adr").mkdir()
    adr = next((ROOT / "adr").glob("0001-*.md"))
    shutil.copy(adr, tmp_path / "adr" / adr.name)
    shutil.copytree(ROOT / "reports" / "adr-0001", tmp_path / "reports" / "adr-0001")
    monkeypatch.setenv("ADRLAB_ROOT", str(tmp_path))
    monkeypatch.setenv("ADRLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADRLAB_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_old_snapshot_loads_as_smoke_with_unknown_provenance(tmp_path: Path) -> None:
    # A snapshot written before evidence had a scale and provenance (the legacy runs.csv).
    current = pd.read_csv(ROOT / "reports" / "adr-0001" / "runs-smoke.csv")
    legacy = tmp_path / "runs.csv"
    current.drop(columns=["scale", "git_sha", "config_hash"]).to_csv(legacy, index=False)
    ev = load_evidence(legacy)
    assert set(ev["scale"]) == {"smoke"}
    assert set(ev["git_sha"]) == {UNKNOWN} and set(ev["config_hash"]) == {UNKNOWN}


def test_paper_scale_without_runs_never_shows_smoke_verdicts(clone: Path, capsys) -> None:
    path = next((clone / "adr").glob("0001-*.md"))
    assert run_report("0001", scale="paper") == 0
    out = capsys.readouterr().out
    assert "paper: NO DATA" in out and "smoke: re-derived from reports/adr-0001/runs-smoke.csv" in out
    block = find_block(path.read_text(encoding="utf-8"))
    assert block is not None
    smoke, paper = block.text.split("### Scale `paper`")
    assert "### Scale `smoke`" in smoke and any(w in smoke for w in VERDICT_WORDS)
    assert "**NO DATA**: no runs in this store and no reports/adr-0001/runs-paper.csv" in paper
    assert not any(w in paper for w in VERDICT_WORDS)
    assert {scale for scale, _ in block_verdicts(block.text)} == {"smoke", "smoke_wikitext2"}
    assert run_report("0001", scale="paper", check=True) == 0
    assert run_report("0001", scale="smoke", check=True) == 0  # --check re-derives every section


def test_history_is_idempotent_and_check_never_writes(clone: Path) -> None:
    path = next((clone / "adr").glob("0001-*.md"))
    history = clone / "reports" / "adr-0001" / "history.csv"
    history.unlink(missing_ok=True)
    text = path.read_text(encoding="utf-8")
    # Pretend the committed block said FAIL where the engine now says INVALID.
    path.write_text(text.replace("**INVALID**", "**FAIL**", 1), encoding="utf-8")
    assert run_report("0001", check=True) == 1  # stale, and nothing written
    assert not history.exists()
    assert run_report("0001", force=True) == 0
    rows = history.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "date,scale,criterion,old,new,estimate,commits"
    assert len(rows) == 2 and ",smoke,IMP-003-early-per_step,FAIL,INVALID," in rows[1], rows
    assert path.read_text(encoding="utf-8") == text
    before = history.read_bytes()
    assert run_report("0001") == 0  # same evidence: nothing appended
    assert history.read_bytes() == before
    report = (clone / "reports" / "adr-0001" / "README.md").read_text(encoding="utf-8")
    assert "## Verdict history" in report and "FAIL → INVALID" in report


def test_diff_lists_verdict_changes_since_a_ref(clone: Path) -> None:
    path = next((clone / "adr").glob("0001-*.md"))
    text = path.read_text(encoding="utf-8")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=clone, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "root")
    path.write_text(text.replace("**INVALID**", "**PASS**"), encoding="utf-8")
    git("add", "adr")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "old verdicts")
    path.write_text(text, encoding="utf-8")
    out = verdict_diff("HEAD", [path], clone)
    assert out.startswith("## ADR verdict changes since `HEAD`")
    assert "| smoke | STABLE-per_step | PASS | INVALID |" in out
    assert "[ADR-0001](reports/adr-0001/README.md)" in out
    diff = verdict_diff("HEAD~1", [path], clone)
    assert diff.count("| smoke |") + diff.count("| smoke_wikitext2 |") == len(block_verdicts(text))  # all new
    with pytest.raises(ValueError, match="unknown git ref"):
        verdict_diff("no-such-ref", [path], clone)


def test_diff_stays_short_enough_for_a_pull_request_comment() -> None:
    rows = [
        [f"[ADR-{i:04d}](adr/{i:04d}.md)", "smoke", f"CRITERION-{j}", "PASS", "FAIL"]
        for i in range(300)
        for j in range(20)
    ]
    text = _diff_text("main", rows, ["[ADR-0001](reports/adr-0001/README.md)"])
    assert len(text) < MAX_DIFF_CHARS and "more changes (see the full reports)" in text


def test_epoch_plot_omits_an_unreadable_legend_and_says_so() -> None:
    import matplotlib.pyplot as plt

    from adrlab.adr.report import LEGEND_LIMIT, _legend

    few, many = plt.subplots()[1], plt.subplots()[1]
    few.plot([1, 2], [3, 4], label="adamw (n=2)")
    _legend(few, 1)
    _legend(many, LEGEND_LIMIT + 1)
    assert few.get_legend() is not None and not few.texts
    assert many.get_legend() is None
    assert f"{LEGEND_LIMIT + 1} curves" in many.texts[0].get_text()
    plt.close("all")


def _sweep_evidence(values: int) -> pd.DataFrame:
    rows = []
    for i in range(values):
        for seed in (1, 2):
            run = f"r{i}-{seed}"
            rows.append(
                {
                    "run_id": run,
                    "arm": "sweep",
                    "kind": "param",
                    "metric": "regularizer.weight_decay",
                    "x": float("nan"),
                    "value": 10.0 ** -(1 + i / values),
                }
            )
            rows += [
                {
                    "run_id": run,
                    "arm": "sweep",
                    "kind": "epoch",
                    "metric": "val_ppl",
                    "x": float(e),
                    "value": 50.0 + i + seed + e,
                }
                for e in (1, 2, 3)
            ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("values", [3, report_mod.BAND_LIMIT + 1])
def test_epoch_plot_draws_seed_bands_only_up_to_the_band_limit(values, tmp_path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(report_mod, "_save", lambda fig, path: figures.append(fig) or path.name)
    report_mod.plot_epoch_metric(_sweep_evidence(values), "val_ppl", tmp_path / "p.png")
    ax = figures[0].axes[0]
    assert len(ax.lines) == values and all(len(line.get_xdata()) == 3 for line in ax.lines)
    assert sorted(line.get_ydata()[0] for line in ax.lines) == [52.5 + i for i in range(values)]  # seed means
    bands = len(ax.collections)
    assert (bands, "omitted" in ax.get_title()) == (
        (values, False) if values <= report_mod.BAND_LIMIT else (0, True)
    )


def _decay_evidence(lams: list[float]) -> pd.DataFrame:
    """A sweep arm over λ (two seeds each) and a plain arm, with the derived decay params."""
    rows = []
    arms = [("sweep", lam) for lam in lams] + [("plain", 0.1)]
    for i, (arm, lam) in enumerate(arms):
        for seed in (1, 2):
            run = f"{arm}-{i}-{seed}"
            params = {"regularizer.weight_decay": lam, "derived.lambda": lam, "derived.tau_iter": 1.0 / lam}
            rows += [
                {"run_id": run, "arm": arm, "kind": "param", "metric": k, "x": float("nan"), "value": v}
                for k, v in params.items()
            ]
    return pd.DataFrame(rows)


def test_decay_table_has_a_row_per_swept_value_in_numeric_order() -> None:
    text = report_mod.derived_table(_decay_evidence([10.0, 0.5, 2.0]))
    arms = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines()[2:]]
    # 0.5 < 2 < 10 as numbers (as strings 10 would come first); the plain arm keeps its bare name.
    assert arms == ["plain", "sweep weight_decay=0.5", "sweep weight_decay=2", "sweep weight_decay=10"]
    assert "| sweep weight_decay=10 | 10 |" in text and "shown" not in text


def test_a_sweep_arm_with_many_values_is_cut_down_and_says_so() -> None:
    lams = [0.001 * 1.5**i for i in range(20)]
    shown, notes = report_mod.shown_runs(_decay_evidence(lams), ("regularizer.weight_decay",))
    sweep = [label for label, _ in shown if label.startswith("sweep")]
    assert len(sweep) == report_mod.VALUES_SHOWN
    assert sweep[0] == f"sweep weight_decay={lams[0]:g}" and sweep[-1] == f"sweep weight_decay={lams[-1]:g}"
    assert notes == [f"sweep: {report_mod.VALUES_SHOWN} of its 20 swept values shown, spread over the range"]
    assert notes[0] + "." in report_mod.derived_table(_decay_evidence(lams))


def _memory_evidence(lams: list[float], steps: int = 20, per_epoch: int = 5) -> pd.DataFrame:
    """`_decay_evidence` plus each run's lr, per-step decay d = η·λ and weight RMS per step."""
    frame = _decay_evidence(lams)
    rows = []
    for run_id, lam in frame[frame["metric"] == "regularizer.weight_decay"][["run_id", "value"]].itertuples(
        index=False
    ):
        arm = run_id.split("-")[0]
        rows.append({"run_id": run_id, "arm": arm, "kind": "param", "metric": "derived.steps_per_epoch",
                     "x": float("nan"), "value": float(per_epoch)})  # fmt: skip
        for step in range(1, steps + 1):
            for metric, value in (("lr", 0.01), ("decay", 0.01 * lam), ("weight_rms", 1.0 / step)):
                rows.append({"run_id": run_id, "arm": arm, "kind": "step", "metric": metric,
                             "x": float(step), "value": value})  # fmt: skip
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def test_memory_profile_has_a_row_and_curve_per_swept_value(tmp_path) -> None:
    lams = [4.0, 0.5, 2.0, 1.0]
    curves, rows, notes = report_mod.memory_and_rms(_memory_evidence(lams))
    labels = ["plain", *[f"sweep weight_decay={lam:g}" for lam in sorted(lams)]]
    assert [row[0] for row in rows] == [c.label for c in curves] == labels and notes == []
    for (label, init_weight, flatness, measured, predicted), curve in zip(rows, curves, strict=True):
        lam = 0.1 if label == "plain" else float(label.split("=")[1])
        d = 0.01 * lam
        assert init_weight == pytest.approx((1 - d) ** 20)  # 20 steps of decay d = η·λ
        assert list(curve.share.index) == [1, 2, 3, 4] and curve.share.sum() == pytest.approx(1.0)
        assert flatness == pytest.approx(1 / (1 - d) ** 15)  # epoch 4's updates over epoch 1's
        assert measured == pytest.approx(1 / 20)
        assert predicted == pytest.approx(0.01 / math.sqrt(2 * d))  # √(η/2λ) with d = η·λ
    assert report_mod.plot_memory_and_rms(curves, tmp_path / "memory.png") == "memory.png"
    assert (tmp_path / "memory.png").stat().st_size > 0


def test_memory_profile_draws_nothing_without_lr_and_decay(tmp_path) -> None:
    assert report_mod.memory_and_rms(_decay_evidence([0.5, 2.0])) == ([], [], [])
    assert report_mod.plot_memory_and_rms([], tmp_path / "m.png") is None
    assert not (tmp_path / "m.png").exists()
