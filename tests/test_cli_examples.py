"""Every command line shown in README.md, adr/README.md and docs/*.md is parsed by the real CLI
parser and composed (or its spec, ADR or Makefile target resolved), without training.

Command lines are found generically: every line of every fenced code block that invokes
`adrlab` (a path ending in /adrlab anywhere, a bare `adrlab` as the command, `python -m adrlab`)
or `make`. `make` lines are expanded with `make -n` against the real Makefile and the adrlab
commands it would run are checked the same way. The count is asserted so that an example can
neither rot nor slip past: adding or removing one means updating EXPECTED_COMMAND_LINES.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from adrlab import cli
from adrlab.config import check_groups_given_once, compose_explained

REPO = Path(__file__).resolve().parents[1]
# Command lines (adrlab or make) in the fenced code blocks of the documents below.
EXPECTED_COMMAND_LINES = 40

_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_LAUNCHERS = {"$", "srun", "mpirun", "sudo", "env", "nohup", "time", "exec"}


# Its commands run in a researcher's own folder, not here: tests/test_tutorial.py runs them for real.
RUN_ELSEWHERE = ("your-own-idea.md",)


def documents() -> list[Path]:
    docs = sorted(p for p in (REPO / "docs").rglob("*.md") if p.name not in RUN_ELSEWHERE)
    return [REPO / "README.md", REPO / "adr" / "README.md", *docs]


def code_block_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of every fenced code block; `\\` continuations joined."""
    out: list[tuple[int, str]] = []
    inside, pending, start = False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE_RE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def shell_words(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ;, &&, ||, |), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: not a command line
        return []
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def command_of(line: str) -> tuple[str, list[str]] | None:
    """("adrlab", argv) or ("make", argv) for the first simple command of a line that invokes
    one (after environment assignments, a `$` prompt and launchers such as srun), else None."""
    for words in shell_words(line):
        while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in _LAUNCHERS):
            words = words[1:]
        if not words:
            continue
        if words[0] == "make":
            return "make", words[1:]
        for i, word in enumerate(words):
            if word.endswith("/adrlab") or (i == 0 and word == "adrlab"):
                return "adrlab", words[i + 1 :]
            if word == "-m" and words[i + 1 : i + 2] == ["adrlab"] and "python" in words[i - 1]:
                return "adrlab", words[i + 2 :]
    return None


def found_command_lines() -> list[tuple[str, str, list[str]]]:
    """(file:line, "adrlab" | "make", argv) of every command line in the documents."""
    found = []
    for path in documents():
        for number, line in code_block_lines(path):
            command = command_of(line)
            if command:
                found.append((f"{path.relative_to(REPO)}:{number}", *command))
    return found


@functools.cache
def lint_errors() -> tuple[str, ...]:
    from adrlab.adr.lint import ERROR, lint

    return tuple(str(m) for m in lint([REPO / "adr"]) if m.severity == ERROR)


def check_adrlab(argv: list[str], tmp: Path) -> None:
    """Parse with the real parser, then compose / load what the command would use."""
    from adrlab.adr.document import parse_adr
    from adrlab.adr.runs import experiment_at, find_adr
    from adrlab.sweep.spec import load_spec, write_multirun_spec

    if "--help" in argv or "-h" in argv:
        with pytest.raises(SystemExit) as exit_:
            cli.parse_args(cli.build_parser(), argv)
        assert exit_.value.code == 0
        return
    args = cli.parse_args(cli.build_parser(), argv)
    if args.command == "run":
        check_groups_given_once(args.overrides)
        if args.multirun:
            write_multirun_spec(args.overrides, tmp)
        else:
            compose_explained(args.overrides)
    elif args.command == "sweep":
        check_groups_given_once(args.overrides)
        load_spec(args.spec, args.overrides, args.n_trials)
    elif args.command == "dashboard" or (args.command == "report" and args.sweep):
        load_spec(args.spec if args.command == "dashboard" else args.sweep)
    elif args.command == "report" or (args.command == "adr" and args.adr_command == "run"):
        ref = args.adr if args.command == "report" else args.id
        if ref:
            experiment_at(parse_adr(find_adr(ref)), args.scale)
        assert not lint_errors(), lint_errors()


# The Makefile's knobs: `make test ARGS=...` exports ARGS to this test, and a nested make would
# otherwise append the pytest arguments to every documented command.
MAKEFILE_KNOBS = ("ARGS", "WORKERS", "SWEEP", "ADR", "SCALE", "STORAGE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def make_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in MAKEFILE_KNOBS}


def check_make(argv: list[str], tmp: Path) -> int:
    """`make -n` (nothing is run, the install step is taken as done) must succeed; the adrlab
    commands it would run are checked. Returns how many there were."""
    result = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=make_env(),
    )
    assert result.returncode == 0, result.stderr
    commands = [command_of(line) for line in result.stdout.splitlines()]
    adrlab = [c[1] for c in commands if c and c[0] == "adrlab"]
    for inner in adrlab:
        check_adrlab(inner, tmp)
    return len(adrlab)


def test_every_documented_command_line_parses_and_composes(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("ADRLAB_ROOT", raising=False)
    found = found_command_lines()
    problems = []
    for where, kind, argv in found:
        try:
            if kind == "make":
                check_make(argv, tmp_path)
            else:
                check_adrlab(argv, tmp_path)
        except (Exception, SystemExit) as exc:  # collect them all: one report names every broken line
            problems.append(f"{where}: {kind} {' '.join(argv)}: {type(exc).__name__}: {exc}")
    assert not problems, "\n".join(problems)
    assert len(found) == EXPECTED_COMMAND_LINES, "\n".join(f"{w}: {k} {' '.join(a)}" for w, k, a in found)


def test_discovery_finds_every_form_and_skips_the_rest(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "`adrlab run` inline is prose\n"
        "```bash\n"
        'make run ARGS="optimizer=adamw"   # comment\n'
        "FOO=1 .venv/bin/adrlab sweep lambda_schedule \\\n"
        "    --n-trials 3 trainer.epochs=1\n"
        "srun .venv/bin/adrlab report --check\n"
        "python -m adrlab run --cfg job\n"
        "sudo -u postgres createuser --pwprompt adrlab\n"
        "adrlab adr list\n"
        "$ cd proj && adrlab report --check | tee out.txt\n"
        "```\n"
        "adrlab run outside a block\n",
        encoding="utf-8",
    )
    commands = [command_of(line) for _, line in code_block_lines(doc)]
    assert [c for c in commands if c] == [
        ("make", ["run", "ARGS=optimizer=adamw"]),
        ("adrlab", ["sweep", "lambda_schedule", "--n-trials", "3", "trainer.epochs=1"]),
        ("adrlab", ["report", "--check"]),
        ("adrlab", ["run", "--cfg", "job"]),
        ("adrlab", ["adr", "list"]),
        ("adrlab", ["report", "--check"]),
    ]
    assert code_block_lines(doc)[1][0] == 4  # a continued line is reported at its first line


def test_a_broken_example_is_caught(tmp_path: Path, runs_dir: Path) -> None:
    with pytest.raises(SystemExit):
        check_adrlab(["sweep", "lambda_schedule", "--n-trails", "3"], tmp_path)
    with pytest.raises(Exception, match="not a known optimizer"):
        check_adrlab(["run", "optimizer=nope", "--cfg", "job"], tmp_path)
    with pytest.raises(AssertionError):
        check_make(["no_such_target"], tmp_path)
