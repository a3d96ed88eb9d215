"""The study's report: reports/sweeps/<name>/README.md with its plots."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.trial import TrialState

from adrlab import tracking
from adrlab.config import compose, project_root, reports_root
from adrlab.mdtable import frame_to_markdown
from adrlab.sweep.spec import SpecError, SweepSpec, load_spec
from adrlab.sweep.storage import (
    ATTR_FAIL_REASON,
    STUDY_N_TRIALS,
    STUDY_OVERRIDES,
    STUDY_SPEC,
    default_storage_url,
    is_rdb,
    open_storage,
    project_relative,
    shown_storage,
)


def report_dir(name: str) -> Path:
    path = reports_root() / "sweeps" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values) if t.intermediate_values else None
        value = (
            t.value if t.state == TrialState.COMPLETE else (t.intermediate_values[last] if last else math.nan)
        )
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": value,
                "epochs": len(t.intermediate_values),
                "run_id": next(
                    (v for k, v in sorted(t.user_attrs.items()) if k.startswith("run_id_seed")), ""
                ),
                "reason": t.user_attrs.get(ATTR_FAIL_REASON, ""),
                **{f"p:{k}": v for k, v in t.params.items()},
            }
        )
    return pd.DataFrame(rows)


def _lambda_key(spec: SweepSpec) -> str | None:
    floats = [p for p in spec.space if p.type == "float"]
    for p in floats:
        if "weight_decay" in p.key or "lam" in p.key:
            return p.key
    return floats[0].key if floats else None


def _category_keys(spec: SweepSpec) -> list[str]:
    return [p.key for p in spec.space if p.type == "categorical"]


def _label(row: pd.Series, keys: list[str]) -> str:
    return " + ".join(str(row.get(f"p:{k}")) for k in keys if pd.notna(row.get(f"p:{k}"))) or "all"


def plot_objective_vs_lambda(table: pd.DataFrame, spec: SweepSpec, path: Path) -> bool:
    key = _lambda_key(spec)
    if key is None or f"p:{key}" not in table:
        return False
    cats = _category_keys(spec)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    data = table[table["value"].notna() & table["state"].isin(["COMPLETE", "PRUNED"])].copy()
    data["group"] = data.apply(lambda r: _label(r, cats), axis=1)
    for group, rows in data.groupby("group"):
        done = rows[rows["state"] == "COMPLETE"]
        pruned = rows[rows["state"] == "PRUNED"]
        sc = ax.scatter(done[f"p:{key}"], done["value"], label=group, s=28)
        ax.scatter(
            pruned[f"p:{key}"], pruned["value"], facecolors="none", edgecolors=sc.get_facecolor(), s=28
        )
    ax.set_xscale("log")
    values = data["value"].abs()
    if len(values) and values.min() > 0 and values.max() / values.min() > 3:
        ax.set_yscale("log")  # one blown-up trial would otherwise flatten every other point
    ax.set_xlabel(key)
    ax.set_ylabel(f"{spec.statistic} {spec.metric}")
    ax.set_title(f"{spec.name}: objective vs {key}\n(hollow = pruned, last reported value)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_learning_curves(spec: SweepSpec, table: pd.DataFrame, path: Path, top: int = 5) -> bool:
    done = table[table["state"] == "COMPLETE"].sort_values("value", ascending=spec.direction == "minimize")
    done = done.head(top)
    if done.empty:
        return False
    uri = tracking.tracking_uri(compose(spec.overrides))
    histories = tracking.metric_histories(uri, [r for r in done["run_id"] if r], [spec.metric])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in done.iterrows():
        hist = histories[histories["run_id"] == row["run_id"]]
        if not row["run_id"] or hist.empty:
            continue
        ax.plot(
            hist["step"], hist["value"], marker="o", ms=3, label=f"#{row['trial']} {_label(row, spec.keys)}"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: learning curves of the top {len(done)} trials")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _optuna_plot(fn, study: optuna.Study, path: Path) -> bool:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = fn(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return False  # e.g. importances need at least two completed trials with varying params
    ax.figure.set_size_inches(7, 4.5)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)
    return True


def sensitivity_lines(table: pd.DataFrame, spec: SweepSpec) -> list[str]:
    """Per schedule: the best objective and the λ range whose trials come within 5% of it.
    Schedules whose every trial was pruned are listed too, so a missing row never hides
    a schedule that lost early."""
    key = _lambda_key(spec)
    if key is None or table.empty or f"p:{key}" not in table:
        return []
    cats = _category_keys(spec)
    tried = table[table["state"].isin(["COMPLETE", "PRUNED"])].reset_index(drop=True)
    tried = tried.assign(group=tried.apply(lambda r: _label(r, cats), axis=1))
    done = tried[tried["state"] == "COMPLETE"]
    if done.empty:
        return []
    minimize = spec.direction == "minimize"
    lines = [
        f"| {' + '.join(cats) or 'all'} | complete | pruned | best | λ at best | "
        "λ range within 5% of this best | worst / best |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    groups = {group: _sensitivity_row(group, rows, key, minimize) for group, rows in tried.groupby("group")}
    lines += [row for _, row, _ in sorted(groups.values(), key=lambda g: g[0])]
    group_bests = {group: best for group, (_, _, best) in groups.items() if best is not None}
    lines += _winner_lines(done, group_bests, spec, key, cats)
    lines += [
        "",
        "A wide λ range within 5% means the result is insensitive to λ there; a worst/best ratio far "
        "above 1 means λ matters. Pruned trials stopped early; their value is the last one reported.",
    ]
    return lines


def _sensitivity_row(
    group: str, rows: pd.DataFrame, key: str, minimize: bool
) -> tuple[float, str, float | None]:
    """(sort order, table row, the group's best value or None if every trial was pruned)."""
    complete = rows[rows["state"] == "COMPLETE"]
    pruned = len(rows) - len(complete)
    if complete.empty:
        last = rows["value"].dropna()
        shown = f"pruned (last {last.min() if minimize else last.max():.4g})" if len(last) else "pruned"
        return math.inf, f"| {group} | 0 | {pruned} | {shown} | – | – | – |", None
    best_row = complete.loc[complete["value"].idxmin() if minimize else complete["value"].idxmax()]
    best = best_row["value"]
    lam = complete[(complete["value"] - best).abs() <= 0.05 * abs(best)][f"p:{key}"]
    worst = complete["value"].max() if minimize else complete["value"].min()
    row = (
        f"| {group} | {len(complete)} | {pruned} | {best:.4g} | {best_row[f'p:{key}']:.3g} | "
        f"{lam.min():.3g} – {lam.max():.3g} | {worst / best:.3f} |"
    )
    return (best if minimize else -best), row, best


def _winner_lines(
    done: pd.DataFrame, group_bests: dict[str, float], spec: SweepSpec, key: str, cats: list[str]
) -> list[str]:
    """The winner, how many trials come within 5% of it, and the schedules within 1%."""
    minimize = spec.direction == "minimize"
    best_overall = done["value"].min() if minimize else done["value"].max()
    near_all = done[(done["value"] - best_overall).abs() <= 0.05 * abs(best_overall)]
    winner = done.loc[done["value"].idxmin() if minimize else done["value"].idxmax()]
    lines = [
        "",
        f"Winner: {_label(winner, cats)} at λ = {winner[f'p:{key}']:.3g} ({best_overall:.4g}). "
        f"{len(near_all)} of {len(done)} completed trials come within 5% of it, with λ from "
        f"{near_all[f'p:{key}'].min():.3g} to {near_all[f'p:{key}'].max():.3g} "
        f"across {near_all['group'].nunique()} schedule(s).",
    ]
    close = [
        f"{g} ({b:.4g})"
        for g, b in sorted(group_bests.items(), key=lambda item: item[1], reverse=not minimize)
        if g != winner["group"] and abs(b - best_overall) <= 0.01 * abs(best_overall)
    ]
    if close:
        lines += [
            f"Within 1% of the winner: {', '.join(close)}; with {len(spec.seeds)} seed(s) a trial, "
            "gaps this small do not rank them.",
        ]
    return lines


def overview_lines(spec: SweepSpec, storage_url: str, table: pd.DataFrame, n_trials: int) -> list[str]:
    """The report's head: what the study is, where its spec and storage are, how far it got
    (n_trials: the budget the study ran with)."""
    counts = table["state"].value_counts().to_dict() if not table.empty else {}
    seeds = "seed from each trial's config" if spec.seeds == [None] else f"mean over seeds {spec.seeds}"
    return [
        f"# Sweep `{spec.name}`",
        "",
        spec.description.strip(),
        "",
        f"- study `{spec.name}` from `{project_relative(spec.path)}`; "
        f"base overrides: `{' '.join(spec.overrides)}`",
        f"- objective: {spec.statistic} `{spec.metric}` ({spec.direction}), {seeds}",
        f"- sampler: {spec.sampler['name']}; pruner: {spec.pruner['name']}; n_trials: {n_trials}",
        f"- storage: `{shown_storage(storage_url)}`; MLflow experiment: {experiment_link(spec)}",
        "- trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        "",
    ]


def experiment_link(spec: SweepSpec) -> str:
    """The study's MLflow experiment as a markdown link to its runs table in `mlflow ui`."""
    uri = tracking.tracking_uri(compose(spec.overrides))
    url = tracking.experiment_urls(uri, [spec.experiment]).get(spec.experiment)
    return f"[`{spec.experiment}`]({url})" if url else f"`{spec.experiment}`"


def run_links(spec: SweepSpec, run_ids: pd.Series) -> list[str]:
    """Short run ids, each a markdown link to the run's page in `mlflow ui` (when in the store)."""
    uri = tracking.tracking_uri(compose(spec.overrides))
    urls = tracking.run_urls(uri, [r for r in run_ids.astype(str) if r])
    return [f"[{r[:8]}]({urls[r]})" if r in urls else r[:8] for r in run_ids.astype(str)]


def _load_existing(study_name: str, storage_url: str) -> optuna.Study | None:
    """The study if the storage holds it (a missing journal file is not created)."""
    if not is_rdb(storage_url) and not Path(storage_url.removeprefix("file://")).is_file():
        return None
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    except KeyError:
        return None


def _variants(family: str, storage: str | None) -> dict[str, str]:
    """Studies of one spec swept with overrides (their names carry the overrides' hash): full
    name → storage URL, from the given storage or the default journals."""
    if storage:
        names = (
            optuna.get_all_study_names(open_storage(storage))
            if is_rdb(storage) or Path(storage).is_file()
            else []
        )
        return {n: storage for n in names if n.startswith(f"{family}-")}
    journals = sorted(Path(default_storage_url(family)).parent.glob(f"{family}-*.journal"))
    return {p.stem: str(p) for p in journals}


def resolve_study(
    name: str | None, storage: str | None, cli_overrides: list[str] | None, study_name: str | None = None
) -> tuple[SweepSpec, str, optuna.Study]:
    """A sweep named as `adrlab sweep` ran it (NAME and the same overrides), or by its full
    study name (`--study lambda_schedule-20cc40f0`: spec and overrides come from the study).
    NAME alone also finds the one study swept from it with overrides."""
    if study_name is None:
        spec = load_spec(str(name), cli_overrides)
        url = storage or default_storage_url(spec)
        study = _load_existing(spec.name, url)
        if study is not None:
            return spec, url, study
        variants = {} if cli_overrides else _variants(spec.name, storage)
        if len(variants) != 1:
            listed = "; ".join(f"--study {n}" for n in sorted(variants))
            raise KeyError(
                f"no study {spec.name!r} in {shown_storage(url)}"
                + (f"; studies of this spec with overrides: {listed}" if variants else "")
            )
        study_name, storage = next(iter(variants.items()))
    url = storage or default_storage_url(study_name)
    study = _load_existing(study_name, url)
    if study is None:
        raise KeyError(f"no study {study_name!r} in {shown_storage(url)}")
    ref = name or str(study.user_attrs.get(STUDY_SPEC, ""))
    if not name and not (project_root() / ref).is_file():
        raise SpecError(f"study {study_name!r} was run from spec {ref!r}, which is not in this project")
    spec = load_spec(name or str(project_root() / ref), list(study.user_attrs.get(STUDY_OVERRIDES, [])))
    return spec, url, study


def write_sweep_report(
    name: str | None,
    *,
    storage: str | None = None,
    cli_overrides: list[str] | None = None,
    study_name: str | None = None,
) -> Path:
    spec, storage_url, study = resolve_study(name, storage, cli_overrides, study_name)
    n_trials = int(study.user_attrs.get(STUDY_N_TRIALS, spec.n_trials))  # the budget it ran with
    table = trials_table(study)
    out = report_dir(spec.name)
    plots = write_plots(spec, study, table, out)
    lines = [*overview_lines(spec, storage_url, table, n_trials), *_best_trial_lines(spec, study)]
    sens = sensitivity_lines(table, spec)
    if sens:
        lines += ["## Sensitivity to λ", "", *sens, ""]
    if plots:
        lines += ["## Plots", ""]
        for title, file in plots:
            lines += [f"### {title}", "", f"![{title}]({file})", ""]
    if not table.empty:
        lines += ["## Trials", "", _trials_markdown(spec, table), ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def write_plots(
    spec: SweepSpec, study: optuna.Study, table: pd.DataFrame, out: Path
) -> list[tuple[str, str]]:
    """The report's plots that could be drawn, as (title, file name in `out`)."""
    from optuna.visualization import matplotlib as ovm

    plots: list[tuple[str, str]] = []
    if _optuna_plot(ovm.plot_optimization_history, study, out / "history.png"):
        plots.append(("Optimisation history", "history.png"))
    if plot_objective_vs_lambda(table, spec, out / "objective_vs_lambda.png"):
        plots.append(("Objective vs λ, coloured by schedule", "objective_vs_lambda.png"))
    if _optuna_plot(ovm.plot_param_importances, study, out / "importance.png"):
        plots.append(("Parameter importances (fANOVA)", "importance.png"))
    if plot_learning_curves(spec, table, out / "curves.png"):
        plots.append(("Learning curves of the top trials", "curves.png"))
    return plots


def _best_trial_lines(spec: SweepSpec, study: optuna.Study) -> list[str]:
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return ["## Best trial", "", "No trial has completed yet.", ""]
    best = study.best_trial
    return [
        "## Best trial",
        "",
        f"Trial #{best.number}: **{best.value:.4g}** ({spec.statistic} {spec.metric}).",
        "",
        *[f"- `{k}` = {v}" for k, v in best.params.items()],
        "",
        "Reproduce: `adrlab run " + " ".join(spec.overrides_for(best.params)) + "`",
        "",
    ]


def _trials_markdown(spec: SweepSpec, table: pd.DataFrame) -> str:
    params = [c for c in table.columns if c.startswith("p:")]
    shown = table[["trial", "state", "value", "epochs", *params, "run_id", "reason"]].copy()
    shown["run_id"] = run_links(spec, shown["run_id"])
    shown.columns = [c.removeprefix("p:") for c in shown.columns]
    return frame_to_markdown(shown)
