"""`adrlab` command line: run, sweep, adr, report, bench, ui, dashboard."""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"adrlab: error: {message}", file=sys.stderr)
    return code


def describe_config_error(exc: BaseException) -> str:
    """Hydra/OmegaConf errors → one message that says what was wrong and what is valid."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from adrlab.config import conf_dir, extra_config_dirs

    if isinstance(exc, MissingConfigException):
        text = str(exc)
        # "Could not find 'optimizer/nope'" → list the valid options of that group.
        marker = "Could not find '"
        if marker in text:
            missing = text.split(marker, 1)[1].split("'", 1)[0]
            group, _, option = missing.rpartition("/")
            folders = [conf_dir(), *extra_config_dirs()]  # --config-dir options are valid too
            options = sorted({p.stem for d in folders for p in (d / group).glob("*.yaml")}) if group else []
            if options:
                return f"{group}={option} is not a known {group}; choose one of: {', '.join(options)}"
        return text.split("\nConfig search path")[0].strip()
    if isinstance(exc, ConfigCompositionException):
        cause = exc.__cause__
        detail = str(cause).split("\n")[0] if cause is not None else ""
        head = str(exc).split("\n")[0]
        if "Could not override" in head:
            key = head.split("'")[1] if "'" in head else head
            return (
                f"{key} is not a setting of this config group (unknown key); check the spelling or the group"
            )
        return f"{head}: {detail}" if detail else head
    return str(exc).split("\n")[0]


def compose_or_exit(overrides: list[str]):
    """Compose + validate, or print a helpful message and raise SystemExit(2)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from adrlab.config import ConfigError, compose

    try:
        return compose(overrides)
    except ConfigError as exc:
        raise SystemExit(fail(str(exc))) from None
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise SystemExit(fail(describe_config_error(exc))) from None


def check_targets_or_exit(cfg) -> None:
    """Import and check a config's `_target_` optimizer/regularizer/schedules before any training:
    a module that does not import, a class that is not an optimizer or an unknown hyperparameter
    stops here with exit code 2 (lint and report never get here: they do not import targets)."""
    from adrlab.config import ConfigError
    from adrlab.extensions import check_targets

    try:
        check_targets(cfg)
    except ConfigError as exc:
        raise SystemExit(fail(str(exc))) from None


def add_config_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir",
        "-cd",
        dest="config_dir",
        action="append",
        default=None,
        metavar="DIR",
        help="a config folder of your own (DIR/optimizer/NAME.yaml, ...) added to Hydra's search path; "
        "repeatable",
    )


def apply_config_dirs(args: argparse.Namespace) -> None:
    """--config-dir DIR: every compose in this process and in the workers it starts (they inherit
    the environment) searches DIR after conf/."""
    import os

    from adrlab.config import CONFIG_DIRS_ENV

    dirs = [os.path.abspath(d) for d in getattr(args, "config_dir", None) or []]
    for d in dirs:
        if not os.path.isdir(d):
            raise SystemExit(fail(f"--config-dir {d}: no such folder"))
    if dirs:
        old = [p for p in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if p]
        os.environ[CONFIG_DIRS_ENV] = os.pathsep.join([*dirs, *old])


# --------------------------------------------------------------------------- subcommands


def cmd_run(args: argparse.Namespace) -> int:
    cfg = compose_or_exit(args.overrides)
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    check_targets_or_exit(cfg)
    from adrlab.config import ConfigError
    from adrlab.data import DataError
    from adrlab.train import train

    try:
        result = train(cfg)
    except (DataError, ConfigError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("adrlab: interrupted; resume with the same overrides plus resume=true", file=sys.stderr)
        return 130
    print(
        f"run {result.run_id}: {result.state}"
        + (f" ({result.failure_reason})" if result.failure_reason else "")
        + f"  best val ppl {result.best_val_ppl:.3f}  final {result.final_val_ppl:.3f}"
        + (f"  (reused {result.reused_from})" if result.reused_from else "")
    )
    return 0 if result.state in ("COMPLETE", "PRUNED") else 1


def cmd_ui(args: argparse.Namespace) -> int:
    import os

    from adrlab import tracking

    uri = tracking.tracking_uri(None)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    if uri.startswith("sqlite"):
        cmd += ["--default-artifact-root", tracking.artifact_root(None)]
    print(f"adrlab: mlflow ui on http://127.0.0.1:{args.port}  (store: {uri})")
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_sweep(args: argparse.Namespace) -> int:
    from adrlab.sweep.runner import run_sweep, shown_storage
    from adrlab.sweep.spec import SpecError, load_spec

    try:
        check_targets_or_exit(compose_or_exit(load_spec(args.spec, args.overrides).overrides))
        outcome = run_sweep(
            args.spec,
            workers=args.workers,
            n_trials=args.n_trials,
            storage=args.storage,
            cli_overrides=args.overrides,
            reuse=not args.no_reuse,
            write_report=not args.no_report,
        )
    except SpecError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("adrlab: sweep interrupted; run the same command again to resume the study", file=sys.stderr)
        return 130
    bad = [c for c in outcome.exit_codes if c != 0]
    print(
        f"sweep {outcome.spec.name}: {outcome.counted}/{outcome.spec.n_trials} trials counted "
        f"(storage {shown_storage(outcome.storage_url)}, MLflow parent run {outcome.parent_run_id})"
        + (f"; {len(bad)} worker(s) exited with errors {bad}" if bad else "")
    )
    return 0 if outcome.counted >= outcome.spec.n_trials and not bad else 1


def cmd_dashboard(args: argparse.Namespace) -> int:
    import os

    from adrlab.sweep.runner import default_storage_url, shown_storage
    from adrlab.sweep.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        return fail(str(exc))
    storage = args.storage or default_storage_url(spec)
    exe = os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")
    print(f"adrlab: optuna-dashboard on http://127.0.0.1:{args.port}  (storage: {shown_storage(storage)})")
    os.execv(exe, [exe, storage, "--host", "127.0.0.1", "--port", str(args.port)])
    return 0  # pragma: no cover


def cmd_report(args: argparse.Namespace) -> int:
    if args.sweep:
        from adrlab.sweep.report import write_sweep_report
        from adrlab.sweep.spec import SpecError

        try:
            path = write_sweep_report(args.sweep, storage=args.storage)
        except SpecError as exc:
            return fail(str(exc))
        except KeyError as exc:
            return fail(
                f"no study {args.sweep!r} in the storage yet; run `adrlab sweep {args.sweep}` first ({exc})"
            )
        print(f"wrote {path}")
        return 0
    from adrlab.adr.document import AdrError
    from adrlab.adr.report import run_report

    try:
        return run_report(args.adr, scale=args.scale, check=args.check, force=args.force)
    except AdrError as exc:
        return fail(str(exc))


def cmd_adr_new(args: argparse.Namespace) -> int:
    """adrlab adr new "title": ROOT/adr/NNNN-slug.md; --config-dir/--python-path are recorded in
    its front matter relative to ROOT, so lint and report find them in any clone."""
    from pathlib import Path

    from adrlab.adr.document import AdrError
    from adrlab.adr.scaffold import new_adr
    from adrlab.config import project_root

    root = Path(args.root).resolve() if args.root else project_root()
    extra: dict[str, object] = {}
    for key, given in (("config_dir", args.config_dir), ("python_path", args.python_path)):
        relative = []
        for item in given or []:
            try:
                relative.append(str(Path(item).resolve().relative_to(root)))
            except ValueError:
                return fail(f"--{key.replace('_', '-')} {item} is not inside the project {root}")
        if relative:
            extra[key] = relative[0] if len(relative) == 1 else relative
    try:
        path = new_adr(args.title, root / "adr", arm=args.arm, control=args.control, extra=extra)
    except AdrError as exc:
        return fail(str(exc))
    print(f"wrote {path}")
    return 0


def cmd_adr(args: argparse.Namespace) -> int:
    from adrlab.adr.document import AdrError, parse_adr
    from adrlab.adr.lint import lint
    from adrlab.adr.runs import adr_dir, all_adr_paths, run_experiments

    if args.adr_command == "new":
        return cmd_adr_new(args)
    if args.adr_command == "lint":
        messages = lint(args.paths or [adr_dir()])
        for message in messages:
            print(message)
        errors = sum(1 for m in messages if m.severity == "error")
        print(f"{len(messages)} message(s), {errors} error(s)")
        return 1 if errors else 0
    if args.adr_command == "list":
        for path in all_adr_paths():
            try:
                adr = parse_adr(path)
            except AdrError as exc:
                print(f"{path.name}: error: {exc}")
                continue
            verdicts = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in adr.text.splitlines()
                    if line.startswith("- Verdicts:")
                ),
                "no verdict yet",
            )
            print(f"ADR-{adr.number}  {adr.status:<11} {verdicts:<50} {adr.title}")
        return 0
    try:
        ran = run_experiments(args.id, scale=args.scale, workers=args.workers)
    except AdrError as exc:
        return fail(str(exc))
    print(
        f"ADR {args.id}: trained {len(ran['jobs'])} run(s); sweeps {ran['sweeps'] or 'none'}; "
        f"now `adrlab report --adr {args.id}`"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from adrlab.bench import run_bench

    path = run_bench(args.suite or ["framework", "optimizers"], args.reps)
    print(path.read_text())
    print(f"wrote {path} and {path.with_name('bench.json')}")
    return 0


def add_adr_new_parser(adr_sub) -> None:
    from adrlab.adr.scaffold import DEFAULT_ARM, DEFAULT_CONTROL

    new = adr_sub.add_parser("new", help="write adr/NNNN-slug.md: front matter, arms, an example criterion")
    new.add_argument("title", help="what the decision is about, e.g. 'Lion vs AdamW'")
    new.add_argument(
        "--root", default=None, help="the project folder to write ROOT/adr/ in (default: adrlab's)"
    )
    new.add_argument(
        "--arm", default=DEFAULT_ARM, help=f"the candidate arm's overrides (default {DEFAULT_ARM!r})"
    )
    new.add_argument(
        "--control",
        default=DEFAULT_CONTROL,
        help=f"the control arm's overrides (default {DEFAULT_CONTROL!r})",
    )
    new.add_argument(
        "--python-path", action="append", default=None, metavar="DIR", help="where its _target_ modules live"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adrlab",
        description="Executable ADRs for optimizer research: Hydra configs, Optuna sweeps, MLflow runs, "
        "verdicts written back into the ADR markdown.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train one run: adrlab run [HYDRA OVERRIDES...]")
    run.add_argument("overrides", nargs="*", help="e.g. optimizer=rmsuon regularizer.weight_decay=0.5")
    run.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    add_config_dir_option(run)
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser("ui", help="mlflow ui on 127.0.0.1 with the store the runs use")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)

    sweep = sub.add_parser("sweep", help="run (or resume) an Optuna study from sweeps/SPEC.yaml")
    sweep.add_argument("spec", help="a name in sweeps/ (e.g. lambda_schedule) or a path to a spec YAML")
    sweep.add_argument("overrides", nargs="*", help="Hydra overrides added to the spec's base overrides")
    sweep.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: one per GPU, else one per CPU core)",
    )
    sweep.add_argument("--n-trials", type=int, default=None, help="override the spec's n_trials")
    sweep.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: a journal file path (default "
        "runs/optuna/NAME.journal) or an RDB URL such as postgresql://user@host/db",
    )
    sweep.add_argument(
        "--no-reuse",
        action="store_true",
        help="retrain even when a finished run with the same config and seed exists",
    )
    sweep.add_argument("--no-report", action="store_true", help="do not write reports/sweeps/NAME at the end")
    add_config_dir_option(sweep)
    sweep.set_defaults(func=cmd_sweep)

    dash = sub.add_parser("dashboard", help="optuna-dashboard on a sweep's study storage (127.0.0.1)")
    dash.add_argument("spec")
    dash.add_argument("--storage", default=None)
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(func=cmd_dashboard)

    report = sub.add_parser(
        "report",
        help="judge ADR criteria, write verdict blocks and reports/ (or a sweep's report with --sweep)",
    )
    report.add_argument("--adr", default=None, help="only this ADR (e.g. 0002); default: all of adr/")
    report.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a verdict block is stale or was edited by hand (for CI)",
    )
    report.add_argument(
        "--force", action="store_true", help="overwrite a verdict block that was edited by hand"
    )
    report.add_argument("--scale", default="smoke", help="which experiments' runs to judge (default smoke)")
    report.add_argument("--sweep", default=None, help="write reports/sweeps/NAME/README.md for this study")
    report.add_argument("--storage", default=None, help="the study's storage, if not the default")
    add_config_dir_option(report)
    report.set_defaults(func=cmd_report)

    adr = sub.add_parser("adr", help="list, lint and run the experiments of ADRs")
    adr_sub = adr.add_subparsers(dest="adr_command", metavar="ADR_COMMAND", required=True)
    adr_sub.add_parser("list", help="id, status, verdicts and title of every ADR")
    lint_p = adr_sub.add_parser(
        "lint", help="schema errors (file:line) and prose FLAGs without machine criteria"
    )
    lint_p.add_argument("paths", nargs="*", help="ADR files or folders (default adr/)")
    run_p = adr_sub.add_parser("run", help="train the runs an ADR still needs (missing arm × seed, sweeps)")
    run_p.add_argument("id", help="e.g. 0002")
    run_p.add_argument("--workers", type=int, default=None)
    run_p.add_argument("--scale", default="smoke")
    add_adr_new_parser(adr_sub)
    for sub_parser in adr_sub.choices.values():
        add_config_dir_option(sub_parser)
    adr.set_defaults(func=cmd_adr)

    bench = sub.add_parser("bench", help="benchmarks (ratios side by side) → reports/bench/")
    bench.add_argument(
        "--suite",
        action="append",
        choices=["framework", "optimizers", "sweep", "workers"],
        help="which suites, repeatable (default: framework and optimizers; sweep takes ~8 min "
        "and workers ~5 min on 2 cores); suites not run keep their last figures",
    )
    bench.add_argument("--reps", type=int, default=3, help="interleaved repetitions per variant")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    apply_config_dirs(args)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
