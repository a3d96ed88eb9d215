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
            return f"{key} is not a setting of this config group (unknown key); check the spelling or the group"
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
    from adrlab.data import DataError
    from adrlab.train import train

    try:
        result = train(cfg)
    except DataError as exc:
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
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    if uri.startswith("sqlite"):
        cmd += ["--default-artifact-root", tracking.artifact_root(None)]
    print(f"adrlab: mlflow ui on http://127.0.0.1:{args.port}  (store: {uri})")
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def not_yet(name: str) -> int:
    return fail(f"`adrlab {name}` is not available yet in this version", code=EXIT_USAGE)


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

    for name, text in (
        ("sweep", "run an Optuna study from sweeps/NAME.yaml"),
        ("adr", "list, lint and run the experiments of ADRs"),
        ("report", "evaluate ADR criteria and write verdicts and reports"),
        ("bench", "benchmarks: framework and logging overhead, optimizer step cost"),
        ("dashboard", "optuna-dashboard on a sweep's study storage"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, name=name: not_yet(name))
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

