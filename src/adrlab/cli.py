"""`adrlab` command line: run, sweep, adr, report, bench, ui, dashboard.

Overrides and options mix in any order (`adrlab sweep NAME --n-trials 10 trainer.epochs=5`),
as Hydra users type them; each subcommand's parser is built by its own `add_*` function.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"adrlab: error: {message}", file=sys.stderr)
    return code


def say_root() -> None:
    """Commands that write say where: the project root and why it is that one."""
    from adrlab.config import project_root_and_source

    root, source = project_root_and_source()
    print(f"adrlab: project root {root} ({source})", file=sys.stderr)


def compose_or_exit(overrides: list[str]):
    """Compose + validate, or print a helpful message and raise SystemExit(2)."""
    from adrlab.config import ConfigError, check_groups_given_once, compose_explained

    try:
        check_groups_given_once(overrides)
        return compose_explained(overrides)
    except ConfigError as exc:
        raise SystemExit(fail(str(exc))) from None


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


def print_config(overrides: list[str], which: str, resolve: bool) -> int:
    """`--cfg job`: the composed run config; `--cfg all` adds hydra.runtime.choices, the option
    each config group ended up with (adrlab composes with Hydra but runs no Hydra launcher, so
    the rest of Hydra's own node does not apply)."""
    from omegaconf import OmegaConf

    from adrlab.config import group_choices

    cfg = compose_or_exit(overrides)
    print(OmegaConf.to_yaml(cfg, resolve=resolve), end="")
    if which == "all":
        print(OmegaConf.to_yaml({"hydra": {"runtime": {"choices": group_choices(overrides)}}}), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.multirun:
        return cmd_multirun(args)
    if args.cfg or args.print_config:
        return print_config(args.overrides, args.cfg or "job", resolve=args.resolve or args.print_config)
    cfg = compose_or_exit(args.overrides)
    check_targets_or_exit(cfg)
    say_root()
    from adrlab import signals
    from adrlab.config import ConfigError
    from adrlab.data import DataError
    from adrlab.train import train

    try:
        with signals.raised_as_exceptions():  # SIGTERM too: the run ends KILLED, not RUNNING
            result = train(cfg)
    except (DataError, ConfigError) as exc:
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


def cmd_multirun(args: argparse.Namespace) -> int:
    """`adrlab run -m a=1,2 b=x,y`: the grid as a study on the sweep workers, with the same
    storage, MLflow parent/child runs and report as `adrlab sweep`."""
    from adrlab import tracking
    from adrlab.config import ConfigError, check_groups_given_once
    from adrlab.sweep.spec import SpecError, write_multirun_spec

    if args.cfg or args.print_config:
        return fail("--cfg shows one run's config; drop -m, or pick one value per key")
    try:
        check_groups_given_once(args.overrides)
        spec_path = write_multirun_spec(args.overrides, tracking.runs_dir() / "multirun")
    except (ConfigError, SpecError) as exc:
        return fail(str(exc))
    say_root()
    print(f"adrlab: multirun study spec {spec_path}", file=sys.stderr)
    return run_study(args, str(spec_path), [], n_trials=None)


def default_storage(args: argparse.Namespace) -> str | None:
    """--storage, else $ADRLAB_STORAGE (one setting for every command of a multi-node job)."""
    import os

    return getattr(args, "storage", None) or os.environ.get("ADRLAB_STORAGE") or None


def run_study(args: argparse.Namespace, spec: str, overrides: list[str], n_trials: int | None) -> int:
    """Run (or resume, or join from another node) a study on the sweep workers and print
    where it stands; Ctrl-C and SIGTERM end its in-flight trials FAIL (exit 130 / 143)."""
    from adrlab import signals
    from adrlab.sweep.runner import run_sweep, shown_storage
    from adrlab.sweep.spec import SpecError

    create_only = getattr(args, "create_only", False)
    try:
        outcome = run_sweep(
            spec,
            workers=args.workers,
            n_trials=n_trials,
            storage=default_storage(args),
            cli_overrides=overrides,
            reuse=not args.no_reuse,
            write_report=not args.no_report,
            create_only=create_only,
        )
    except SpecError as exc:
        return fail(str(exc))
    except KeyboardInterrupt as exc:
        print("adrlab: sweep interrupted; run the same command again to resume the study", file=sys.stderr)
        return signals.exit_code(exc)
    return sweep_summary(outcome, shown_storage(outcome.storage_url), create_only)


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
    base = f"http://127.0.0.1:{args.port}"
    print(f"adrlab: mlflow ui on {tracking.ui_url(uri, base=base)}  (store: {uri})")
    tracking.mark_training_experiments(uri)  # older stores: open runs tables, not GenAI pages
    for name, url in tracking.experiment_urls(uri, base=base).items():  # each opens its runs table
        print(f"  {name}: {url}")
    sys.stdout.flush()  # execv drops what is still buffered
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_sweep(args: argparse.Namespace) -> int:
    from adrlab.config import ConfigError, check_groups_given_once
    from adrlab.sweep.spec import SpecError, load_spec

    try:
        check_groups_given_once(args.overrides)
        base = load_spec(args.spec, args.overrides).overrides
    except (ConfigError, SpecError) as exc:
        return fail(str(exc))
    check_targets_or_exit(compose_or_exit(base))  # a `_target_` that cannot train stops here
    say_root()
    return run_study(args, args.spec, args.overrides, n_trials=args.n_trials)


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


def refused_by_lint(paths: list) -> int | None:
    """Exit code 2 (after printing why) when lint rejects one of these ADRs, else None. A hand
    edit inside a verdict block is left to the report itself (refused unless --force)."""
    from adrlab.adr.lint import ERROR, lint

    errors = [
        m for m in lint(paths) if m.severity == ERROR and not m.message.startswith("verdict block edited")
    ]
    if not errors:
        return None
    for message in errors:
        print(message, file=sys.stderr)
    return fail(f"refused: `adrlab adr lint` rejects {len(errors)} thing(s) above; nothing was written")


def cmd_report(args: argparse.Namespace) -> int:
    if args.sweep or args.study:
        return report_sweep(args)
    from adrlab.adr.document import AdrError
    from adrlab.adr.report import run_report
    from adrlab.adr.runs import all_adr_paths, find_adr

    if getattr(args, "diff", None):
        from adrlab.adr.report import print_verdict_diff

        return print_verdict_diff(args.diff)
    try:
        refused = refused_by_lint([find_adr(args.adr)] if args.adr else all_adr_paths())
        if refused is not None:
            return refused
        if not args.check:
            say_root()
        return run_report(args.adr, scale=args.scale, check=args.check, force=args.force)
    except AdrError as exc:
        return fail(str(exc))


def report_sweep(args: argparse.Namespace) -> int:
    from adrlab.sweep.report import write_sweep_report
    from adrlab.sweep.spec import SpecError

    say_root()
    try:
        path = write_sweep_report(
            args.sweep, storage=default_storage(args), cli_overrides=args.overrides, study_name=args.study
        )
    except SpecError as exc:
        return fail(str(exc))
    except KeyError as exc:
        return fail(f"{exc.args[0]}; run `adrlab sweep {args.sweep or args.study}` first")
    print(f"wrote {path}")
    return 0


def cmd_adr_lint(args: argparse.Namespace) -> int:
    from adrlab.adr.lint import lint
    from adrlab.adr.runs import adr_dir

    messages = lint(args.paths or [adr_dir()])
    for message in messages:
        print(message)
    errors = sum(1 for m in messages if m.severity == "error")
    print(f"{len(messages)} message(s), {errors} error(s)")
    return 1 if errors else 0


def cmd_adr_list(args: argparse.Namespace) -> int:
    from adrlab.adr.document import AdrError, parse_adr
    from adrlab.adr.runs import all_adr_paths

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


def cmd_adr_run(args: argparse.Namespace) -> int:
    from adrlab import signals
    from adrlab.adr.document import AdrError
    from adrlab.adr.runs import find_adr, run_experiments
    from adrlab.sweep.spec import SpecError

    try:
        refused = refused_by_lint([find_adr(args.id)])
        if refused is not None:
            return refused
        say_root()
        ran = run_experiments(args.id, scale=args.scale, workers=args.workers, storage=default_storage(args))
    except (AdrError, SpecError) as exc:  # SpecError: e.g. a database URL as tracking URI
        return fail(str(exc))
    except KeyboardInterrupt as exc:
        print(f"adrlab: interrupted; run `adrlab adr run {args.id}` again to resume", file=sys.stderr)
        return signals.exit_code(exc)
    print(
        f"ADR {args.id}: trained {len(ran['jobs'])} run(s); sweeps {ran['sweeps'] or 'none'}; "
        f"now `adrlab report --adr {args.id}`"
    )
    return 0


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


def cmd_bench(args: argparse.Namespace) -> int:
    from adrlab.bench import run_bench

    say_root()
    path = run_bench(args.suite or ["framework", "logging", "optimizers"], args.reps, args.threads)
    print(path.read_text())
    print(f"wrote {path} and {path.with_name('bench.json')}")
    return 0


# --------------------------------------------------------------------------- parser


def groups_help() -> str:
    """The config groups and their options, for --help."""
    from adrlab.config import ConfigError, config_groups

    try:
        groups = config_groups()
    except ConfigError as exc:
        return f"config groups: unavailable ({exc})"
    width = max(len(g) for g in groups)
    pad = " " * (width + 4)
    lines = [
        textwrap.fill(", ".join(options), 100, initial_indent=f"  {group:<{width}}  ", subsequent_indent=pad)
        for group, options in groups.items()
    ]
    return "config groups (GROUP=OPTION; keys as GROUP.KEY=VALUE; see --cfg job):\n" + "\n".join(lines)


def add_run_parser(sub) -> None:
    run = sub.add_parser(
        "run",
        help="train one run (or a grid with -m): adrlab run [HYDRA OVERRIDES...]",
        epilog=groups_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("overrides", nargs="*", help="e.g. optimizer=rmsuon regularizer.weight_decay=0.5")
    run.add_argument(
        "--cfg", choices=["job", "all"], default=None, help="print the composed config (all: + group choices)"
    )
    run.add_argument("--resolve", action="store_true", help="with --cfg: resolve ${...} interpolations")
    run.add_argument("--print-config", action="store_true", help="the same as --cfg job --resolve")
    run.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="a grid over swept overrides (a=1,2  b=choice(x,y)  c=range(1,4)) as a study on the sweep "
        "workers: reports/sweeps/multirun-KEYS-HASH/",
    )
    add_study_options(run, "with -m: ")
    add_config_dir_option(run)
    run.set_defaults(func=cmd_run)


def add_study_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Options shared by everything that runs a study on the sweep workers."""
    add_worker_options(parser, prefix)
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help=prefix + "retrain even when a finished run with the same config and seed exists",
    )
    parser.add_argument(
        "--no-report", action="store_true", help=prefix + "do not write reports/sweeps/NAME at the end"
    )


def add_worker_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Where a study's trials run: this node's worker processes and the storage nodes share."""
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=prefix + "worker processes (default: one per GPU, else one per CPU core)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help=prefix + "Optuna storage: a journal file path (default runs/optuna/NAME.journal) "
        "or an RDB URL such as postgresql://user@host/db that many nodes share ($ADRLAB_STORAGE)",
    )


def add_sweep_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="run (or resume) an Optuna study from sweeps/SPEC.yaml")
    sweep.add_argument("spec", help="a name in sweeps/ (e.g. lambda_schedule) or a path to a spec YAML")
    sweep.add_argument("overrides", nargs="*", help="Hydra overrides added to the spec's base overrides")
    sweep.add_argument("--n-trials", type=int, default=None, help="override the spec's n_trials")
    add_study_options(sweep)
    add_config_dir_option(sweep)
    sweep.add_argument(
        "--create-only",
        action="store_true",
        help="create the storage schema, the study and its MLflow parent run, then exit "
        "(a multi-node job's first step; nodes may also start together without it)",
    )
    sweep.set_defaults(func=cmd_sweep)


def add_ui_parser(sub) -> None:
    ui = sub.add_parser("ui", help="mlflow ui on 127.0.0.1 with the store the runs use")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)


def add_dashboard_parser(sub) -> None:
    dash = sub.add_parser("dashboard", help="optuna-dashboard on a sweep's study storage (127.0.0.1)")
    dash.add_argument("spec")
    dash.add_argument("--storage", default=None)
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(func=cmd_dashboard)


def add_report_parser(sub) -> None:
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
    report.add_argument(
        "--diff",
        default=None,
        metavar="GIT_REF",
        help="print a markdown summary of verdict changes since GIT_REF",
    )
    add_config_dir_option(report)
    report.set_defaults(func=cmd_report, overrides_need="sweep")


def add_adr_parser(sub) -> None:
    adr = sub.add_parser("adr", help="list, lint and run the experiments of ADRs")
    adr_sub = adr.add_subparsers(dest="adr_command", metavar="ADR_COMMAND", required=True)
    adr_sub.add_parser("list", help="id, status, verdicts and title of every ADR").set_defaults(
        func=cmd_adr_list
    )
    lint_p = adr_sub.add_parser(
        "lint",
        help="schema errors (file:line), arms that do not compose, ADR numbers, prose FLAGs without criteria",
    )
    lint_p.add_argument("paths", nargs="*", help="ADR files or folders (default adr/)")
    lint_p.set_defaults(func=cmd_adr_lint, rest_dest="paths")
    run_p = adr_sub.add_parser("run", help="train the runs an ADR still needs (missing arm × seed, sweeps)")
    run_p.add_argument("id", help="e.g. 0002")
    run_p.add_argument("--scale", default="smoke")
    add_worker_options(run_p, "for the ADR's job and sweep studies: ")
    run_p.set_defaults(func=cmd_adr_run)
    add_adr_new_parser(adr_sub)
    for sub_parser in adr_sub.choices.values():
        add_config_dir_option(sub_parser)


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
    new.set_defaults(func=cmd_adr_new)


def add_bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (ratios side by side) → reports/bench/")
    bench.add_argument(
        "--suite",
        action="append",
        choices=["framework", "logging", "optimizers", "sweep", "workers", "readback"],
        help="which suites, repeatable (default: framework and optimizers; sweep takes ~8 min "
        "and workers ~5 min on 2 cores); suites not run keep their last figures",
    )
    bench.add_argument(
        "--reps", type=int, default=9, help="interleaved repetitions per variant (6 for whole runs)"
    )
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    bench.set_defaults(func=cmd_bench)


SUBCOMMANDS = (
    add_run_parser,
    add_sweep_parser,
    add_report_parser,
    add_adr_parser,
    add_ui_parser,
    add_dashboard_parser,
    add_bench_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adrlab",
        description="Executable ADRs for optimizer research: Hydra configs, Optuna sweeps, MLflow runs, "
        "verdicts written back into the ADR markdown. Overrides and options go in any order.",
        epilog=groups_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like parse_intermixed_args (which refuses subcommands): a trailing positional that the
    subcommand's `nargs="*"` list (overrides, or paths) did not take, because an option came
    between them, joins that list; an unknown option is still an error."""
    args, extras = parser.parse_known_args(argv)
    dest = getattr(args, "rest_dest", "overrides")
    strays = [e for e in extras if e.startswith("-") or not isinstance(getattr(args, dest, None), list)]
    if strays:
        parser.error(f"unrecognized arguments: {' '.join(strays)}")
    if extras:
        setattr(args, dest, [*getattr(args, dest), *extras])
    need = getattr(args, "overrides_need", None)  # report: overrides only name a --sweep's study
    if need and args.overrides and not getattr(args, need):
        parser.error(f"unrecognized arguments: {' '.join(args.overrides)} (overrides go with --{need} NAME)")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    apply_config_dirs(args)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
