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

    from adrlab.config import conf_dir

    if isinstance(exc, MissingConfigException):
        text = str(exc)
        # "Could not find 'optimizer/nope'" → list the valid options of that group.
        marker = "Could not find '"
        if marker in text:
            missing = text.split(marker, 1)[1].split("'", 1)[0]
            group, _, option = missing.rpartition("/")
            options = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml")) if group else []
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


# --------------------------------------------------------------------------- subcommands


def cmd_run(args: argparse.Namespace) -> int:
    cfg = compose_or_exit(args.overrides)
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    from adrlab import signals
    from adrlab.data import DataError
    from adrlab.train import train

    try:
        with signals.raised_as_exceptions():  # SIGTERM too: the run ends KILLED, not RUNNING
            result = train(cfg)
    except DataError as exc:
        return fail(str(exc))
    except KeyboardInterrupt as exc:
        print("adrlab: interrupted; resume with the same overrides plus resume=true", file=sys.stderr)
        return signals.exit_code(exc)
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
    if uri.startswith(("http://", "https://")):
        # A tracking server already serves the UI; starting another on its URI would fail.
        print(f"adrlab: MLFLOW_TRACKING_URI is a tracking server; its UI is at {uri}")
        return 0
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


def default_storage(args: argparse.Namespace) -> str | None:
    """--storage, else $ADRLAB_STORAGE (one setting for every command of a multi-node job)."""
    import os

    return getattr(args, "storage", None) or os.environ.get("ADRLAB_STORAGE") or None


def cmd_sweep(args: argparse.Namespace) -> int:
    from adrlab import signals
    from adrlab.sweep.runner import run_sweep, shown_storage
    from adrlab.sweep.spec import SpecError

    try:
        outcome = run_sweep(
            args.spec,
            workers=args.workers,
            n_trials=args.n_trials,
            storage=default_storage(args),
            cli_overrides=args.overrides,
            reuse=not args.no_reuse,
            write_report=not args.no_report,
            create_only=getattr(args, "create_only", False),
        )
    except SpecError as exc:
        return fail(str(exc))
    except KeyboardInterrupt as exc:
        print("adrlab: sweep interrupted; run the same command again to resume the study", file=sys.stderr)
        return signals.exit_code(exc)
    return sweep_summary(outcome, shown_storage(outcome.storage_url), getattr(args, "create_only", False))


def sweep_summary(outcome, storage: str, create_only: bool) -> int:
    """Say where the study stands and exit 0 when this node did its part: the study is
    complete, or the trials left run on other nodes (the last of them finishes the study)."""
    name, budget = outcome.spec.name, outcome.spec.n_trials
    bad = [c for c in outcome.exit_codes if c != 0]
    if create_only:
        print(f"sweep {name}: study ready ({outcome.counted}/{budget} counted; storage {storage})")
        return 0
    state = (
        "complete"
        if outcome.complete
        else f"done here; {outcome.running_elsewhere} trial(s) still running on other workers"
        if outcome.running_elsewhere
        else "incomplete; run the same command again to resume"
    )
    print(
        f"sweep {name}: {outcome.counted}/{budget} trials counted, {state} "
        f"(storage {storage}, MLflow parent run {outcome.parent_run_id})"
        + (f"; {len(bad)} worker(s) exited with errors {bad}" if bad else "")
    )
    print(f"report: {outcome.report_command}")
    return 0 if (outcome.complete or outcome.running_elsewhere) and not bad else 1


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
    if args.sweep or getattr(args, "study", None):
        from adrlab.sweep.report import write_sweep_report
        from adrlab.sweep.spec import SpecError

        overrides = list(getattr(args, "overrides", None) or [])
        try:
            path = write_sweep_report(
                args.sweep, storage=default_storage(args), cli_overrides=overrides, study_name=args.study
            )
        except SpecError as exc:
            return fail(str(exc))
        except KeyError as exc:
            return fail(f"{exc.args[0]}; run `adrlab sweep {args.sweep or args.study}` first")
        print(f"wrote {path}")
        return 0
    from adrlab.adr.document import AdrError
    from adrlab.adr.report import run_report

    try:
        return run_report(args.adr, scale=args.scale, check=args.check, force=args.force)
    except AdrError as exc:
        return fail(str(exc))


def cmd_adr(args: argparse.Namespace) -> int:
    from adrlab.adr.document import AdrError, parse_adr
    from adrlab.adr.lint import lint
    from adrlab.adr.runs import adr_dir, all_adr_paths, run_experiments
    from adrlab.sweep.spec import SpecError

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
        ran = run_experiments(args.id, scale=args.scale, workers=args.workers, storage=default_storage(args))
    except (AdrError, SpecError) as exc:  # SpecError: e.g. a database URL as tracking URI
        return fail(str(exc))
    except KeyboardInterrupt as exc:
        from adrlab import signals

        print(f"adrlab: interrupted; run `adrlab adr run {args.id}` again to resume", file=sys.stderr)
        return signals.exit_code(exc)
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
    sweep.add_argument(
        "--create-only",
        action="store_true",
        help="create the storage schema, the study and its MLflow parent run, then exit "
        "(a multi-node job's first step; nodes may also start together without it)",
    )
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
    report.add_argument(
        "--storage", default=None, help="the study's storage, if not the default ($ADRLAB_STORAGE)"
    )
    report.add_argument(
        "--study", default=None, help="a sweep's full study name as `adrlab sweep` printed it (NAME-hash)"
    )
    report.add_argument(
        "overrides", nargs="*", help="with --sweep: the overrides the sweep ran with (they name its study)"
    )
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
    run_p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage for the ADR's job and sweep studies, e.g. postgresql://user@host/db "
        "($ADRLAB_STORAGE); nodes sharing it share the jobs",
    )
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
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
