"""ADR documents: front matter parsing, schema validation and line-level front matter edits.

An ADR is markdown with YAML front matter between the first two ``---`` lines. Besides the
human keys (title, status, ...) the front matter may declare ``experiments`` (arms per scale)
and ``criteria`` (success criteria judged from stored runs). Every schema error names the
file and the line of the offending key or value, using ruamel.yaml's position info, so a
malformed ADR can be fixed without guessing. Parsing never writes anything.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from adrlab.adr.declared import declared_metrics
from adrlab.adr.metrics import EPOCH_METRICS, LOGGED_METRICS, NUMERIC_PARAMS, SIGNED_STATISTICS

STATUSES: tuple[str, ...] = ("Proposed", "Accepted", "Rejected", "Superseded", "Deprecated")
ROLES: tuple[str, ...] = ("primary", "secondary", "flag")
COMPARES: tuple[str, ...] = ("<", "<=", ">", ">=")
RELATIONS: tuple[str, ...] = ("ratio", "difference")
MODES: tuple[str, ...] = ("min", "max")
SPREAD_KINDS: tuple[str, ...] = ("ratio", "range", "min", "max")
DIVERGED_RULES: tuple[str, ...] = ("worst", "as_logged")

# Statistic name -> (required parameters, optional parameters). Parameters are validated
# by `_validate_statistic`; the computations live in adrlab.adr.stats.
STATISTICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "value_at_epoch": (("epoch",), ("relative_to",)),
    "mean_over_epochs": (("start", "end"), ("relative_to",)),
    "best": ((), ("relative_to",)),
    "final": ((), ("relative_to",)),
    "final_over_best": ((), ()),
    "epoch_of_best": ((), ()),
    "slope": ((), ("start", "end", "relative_to")),
    "cv": ((), ("start", "end")),
    "max_spike": ((), ("window", "start", "end")),
    "spread": (("over", "of"), ("kind",)),
    # First epoch/step at which the metric reaches `target` (censored: +inf); see adr/README.md.
    "time_to_target": (("target",), ("axis",)),
}
# `relative_to: PARAM` divides each run's statistic by that run's own numeric param (one of
# metrics.NUMERIC_PARAMS), e.g. final weight RMS over the predicted √(η/2λ). Refused where the
# value is not in the metric's units, with the reason:
RELATIVE_TO_REFUSED: dict[str, str] = {
    "final_over_best": "is already a ratio of the run's own values (no units to divide)",
    "cv": "is already a ratio of the run's own values (no units to divide)",
    "max_spike": "is already a ratio of the run's own values (no units to divide)",
    "epoch_of_best": "is an epoch or step, not a value of the metric",
    "time_to_target": "is a time on its axis (epochs, steps, seconds, tokens), not a value of the metric",
    "spread": "compares runs with different params; put relative_to on its per-run statistic `of`",
}
# Axes of time_to_target: the series' own x (epoch for a per-epoch metric, step for a per-step
# one), or a clock the verdict engine derives from the run (adrlab.adr.per_run).
TIME_TO_TARGET_AXES: tuple[str, ...] = ("epoch", "step", "seconds", "tokens")
# Why an axis does not fit a metric: (axis, metric is per epoch) -> the reason.
AXIS_MISFITS: dict[tuple[str, bool], str] = {
    ("epoch", False): "a per-step metric is indexed by step, not epoch: use axis: step or tokens",
    ("step", True): "a per-epoch metric is indexed by epoch, not step: use axis: epoch, seconds or tokens",
    ("seconds", False): (
        "no per-step wall clock is logged (tokens_per_s covers only the logging intervals, not "
        "validation or the steps between them): use axis: step or tokens, or a per-epoch metric "
        "such as val_ppl"
    ),
}
# Statistic parameters that name one of a fixed set: (valid values, default).
CHOICE_PARAMS: dict[str, tuple[tuple[str, ...], str]] = {
    "kind": (SPREAD_KINDS, "ratio"),
    "axis": (TIME_TO_TARGET_AXES, "epoch"),
}

TOP_LEVEL_KEYS: tuple[str, ...] = (
    "title",
    "status",
    "date",
    "authors",
    "tags",
    "supersedes",
    "superseded_by",
    "auto_status",
    "experiments",
    "criteria",
    "config_dir",
    "python_path",
)
EXPERIMENT_KEYS: tuple[str, ...] = ("seeds", "overrides", "arms")
SWEEP_ARM_KEYS: tuple[str, ...] = ("sweep", "overrides", "control")
CRITERION_KEYS: tuple[str, ...] = (
    "id",
    "claim",
    "role",
    "arm",
    "baseline",
    "relation",
    "metric",
    "statistic",
    "mode",
    "compare",
    "threshold",
    "min_seeds",
    "diverged",
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_FENCE_RE = re.compile(r"^---[ \t]*$")


class AdrError(ValueError):
    """A malformed ADR; ``str()`` reads ``path:line: message`` like a compiler error."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Statistic:
    """A per-run statistic of a metric series, e.g. ``value_at_epoch`` with ``{"epoch": 3}``.

    For ``spread`` the inner per-run statistic is in ``of`` (never itself a spread).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    of: Statistic | None = None

    def describe(self, metric: str | None = None) -> str:
        """E.g. ``value_at_epoch(val_ppl, epoch=3)`` or ``spread[ratio] of best(val_ppl) over λ``."""
        if self.name == "spread" and self.of is not None:
            kind = self.params.get("kind", "ratio")
            return f"spread[{kind}] of {self.of.describe(metric)} over {self.params['over']}"
        shown = {k: v for k, v in self.params.items() if k != "relative_to"}
        args = ([metric] if metric else []) + [f"{k}={v}" for k, v in shown.items()]
        text = f"{self.name}({', '.join(args)})" if args else self.name
        return f"{text} / {self.relative_to}" if self.relative_to else text

    @property
    def relative_to(self) -> str | None:
        """The run's own param this statistic is divided by, if any (for spread: its ``of``'s)."""
        if self.name == "spread" and self.of is not None:
            return self.of.relative_to
        value = self.params.get("relative_to")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class Arm:
    """One arm of an experiment: Hydra overrides, or a reference to ``sweeps/<sweep>.yaml``."""

    name: str
    overrides: tuple[str, ...] = ()
    sweep: str | None = None
    line: int = 0
    control: str | None = None  # the no-op arm this arm's intervention must differ from


@dataclass(frozen=True)
class Experiment:
    """What runs at one scale: seeds, overrides common to every arm, and the arms."""

    scale: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    arms: Mapping[str, Arm]
    line: int = 0

    def arm_overrides(self, arm: str) -> list[str]:
        """The full override list of one arm: scale-wide overrides first, then the arm's own."""
        return [*self.overrides, *self.arms[arm].overrides]


@dataclass(frozen=True)
class Criterion:
    """A success criterion: ``statistic(metric)`` of ``arm`` (optionally related to a baseline)."""

    id: str
    claim: str
    role: str
    arm: str
    metric: str
    statistic: Statistic
    compare: str
    threshold: float
    min_seeds: int = 2
    mode: str = "min"
    baseline: str | None = None
    relation: str | None = None
    line: int = 0
    diverged: str = "worst"  # worst: a diverged run is the worst value; as_logged: opt out

    @property
    def arms(self) -> tuple[str, ...]:
        """Every arm the criterion needs runs of."""
        return (self.arm,) if self.baseline is None else (self.arm, self.baseline)

    def describe_threshold(self) -> str:
        """Human-readable comparison, e.g. ``final(val_ppl): a / b < 0.98``."""
        quantity = self.statistic.describe(self.metric)
        if self.baseline is not None:
            op = "/" if self.relation == "ratio" else "−"
            if self.statistic.name != "spread" and self.statistic.relative_to:
                quantity = f"({quantity})"  # the per-run ratio first, then arm vs baseline
            quantity = f"{quantity}: {self.arm} {op} {self.baseline}"
        return f"{quantity} {self.compare} {_fmt_number(self.threshold)}"


@dataclass
class Adr:
    """A parsed ADR. ``text`` is the file's exact text; nothing here rewrites it."""

    path: Path
    text: str
    front_matter: dict[str, Any]
    title: str
    status: str
    auto_status: bool
    experiments: dict[str, Experiment]
    criteria: list[Criterion]
    front_matter_lines: tuple[int, int]  # (first, last) 1-based file lines of the YAML text
    body: str
    body_line: int  # 1-based file line where the body starts
    # A researcher's own config folders and module folders the arms need, relative to the
    # project that holds adr/ (front matter `config_dir`, `python_path`: a string or a list).
    config_dirs: tuple[str, ...] = ()
    python_paths: tuple[str, ...] = ()

    @property
    def number(self) -> str | None:
        """``"0002"`` from a file name like ``0002-v-rmsuon.md`` or a title ``ADR-0002: ...``."""
        m = re.search(r"ADR-(\d+)", self.title) or re.match(r"^(\d{3,})", self.path.name)
        return m.group(1) if m else None

    def arm_names(self) -> list[str]:
        names: dict[str, None] = {}
        for exp in self.experiments.values():
            names.update(dict.fromkeys(exp.arms))
        return list(names)


def _fmt_number(x: float) -> str:
    return f"{x:.6g}"


# --------------------------------------------------------------------------- front matter split


@dataclass(frozen=True)
class FrontMatterSpan:
    """Where the front matter lies: character offsets of its YAML text and 1-based file lines."""

    yaml_start: int  # offset of the first YAML character (after the opening '---' line)
    yaml_end: int  # offset of the closing '---' line
    body_start: int  # offset just after the closing '---' line
    first_line: int  # file line of the first YAML line (2 when the file starts with '---')
    closing_line: int  # file line of the closing '---'


def find_front_matter(text: str, path: str | Path = "<adr>") -> FrontMatterSpan:
    """Locate the YAML front matter; raise AdrError when the file does not start with one."""
    lines = text.splitlines(keepends=True)
    if not lines or not _FENCE_RE.match(lines[0].lstrip("\ufeff").rstrip("\r\n")):
        raise AdrError(path, 1, "missing front matter: the file must start with a '---' line")
    offset = len(lines[0])
    for number, line in enumerate(lines[1:], start=2):
        if _FENCE_RE.match(line.rstrip("\r\n")):
            return FrontMatterSpan(len(lines[0]), offset, offset + len(line), 2, number)
        offset += len(line)
    raise AdrError(path, 1, "front matter is not closed: no second '---' line")


# --------------------------------------------------------------------------- parsing


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def load_front_matter(text: str, path: str | Path = "<adr>") -> tuple[CommentedMap, FrontMatterSpan]:
    """The front matter as a ruamel CommentedMap (with line info) and its span."""
    span = find_front_matter(text, path)
    yaml_text = text[span.yaml_start : span.yaml_end]
    try:
        data = _yaml().load(yaml_text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = span.first_line + mark.line if mark is not None else span.first_line
        problem = exc.problem or str(exc)
        raise AdrError(
            path, line, f"front matter is not valid YAML: {problem}{_yaml_hint(text, line)}"
        ) from exc
    except YAMLError as exc:
        raise AdrError(path, span.first_line, f"front matter is not valid YAML: {exc}") from exc
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise AdrError(path, span.first_line, "front matter must be a YAML mapping (key: value lines)")
    return data, span


def _yaml_hint(text: str, line: int) -> str:
    # An unquoted '>' starts a folded block scalar in YAML; say so instead of a bare scanner error.
    lines = text.splitlines()
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    if re.search(r"compare\s*:\s*[<>]", source):
        return ' (quote comparison operators, e.g. compare: ">=")'
    return ""


def parse_adr(path: str | Path) -> Adr:
    """Read and validate one ADR file (UTF-8). Raises AdrError naming file and line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise AdrError(p, None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise AdrError(p, line, "not valid UTF-8") from exc
    return parse_adr_text(text, p)


def parse_adr_text(text: str, path: str | Path = "<adr>") -> Adr:
    """Validate an ADR given as text; ``path`` is only used in messages and the result."""
    data, span = load_front_matter(text, path)
    v = _Validator(str(path), span.first_line)
    return v.adr(Path(path), text, data, span)


class _Validator:
    """Walks the ruamel tree; every failure names the file line of the offending node."""

    def __init__(self, path: str, first_line: int) -> None:
        self.path = path
        self.first_line = first_line

    # ---- positions (ruamel lines are 0-based within the YAML text)

    def key_line(self, m: CommentedMap, key: Any) -> int:
        try:
            return self.first_line + m.lc.key(key)[0]
        except (AttributeError, KeyError, TypeError):
            return self.map_line(m)

    def value_line(self, m: CommentedMap, key: Any) -> int:
        try:
            return self.first_line + m.lc.value(key)[0]
        except (AttributeError, KeyError, TypeError):
            return self.key_line(m, key)

    def item_line(self, s: CommentedSeq, i: int) -> int:
        try:
            return self.first_line + s.lc.item(i)[0]
        except (AttributeError, KeyError, TypeError, IndexError):
            return self.map_line(s)

    def map_line(self, node: Any) -> int:
        lc = getattr(node, "lc", None)
        line = getattr(lc, "line", None)
        return self.first_line + line if isinstance(line, int) else self.first_line

    def fail(self, line: int, where: str, message: str) -> NoReturn:
        raise AdrError(self.path, line, f"{where}: {message}" if where else message)

    # ---- generic checks

    def mapping(self, node: Any, line: int, where: str) -> CommentedMap:
        if not isinstance(node, CommentedMap):
            self.fail(line, where, f"expected a mapping, got {_kind(node)}")
        return node

    def sequence(self, node: Any, line: int, where: str) -> CommentedSeq:
        if not isinstance(node, CommentedSeq):
            self.fail(line, where, f"expected a list, got {_kind(node)}")
        return node

    def known_keys(self, m: CommentedMap, allowed: tuple[str, ...], where: str) -> None:
        for key in m:
            if key not in allowed:
                prefix = f"{where}." if where else ""
                self.fail(
                    self.key_line(m, key), f"{prefix}{key}", f"unknown key; valid: {', '.join(allowed)}"
                )

    def string(self, m: CommentedMap, key: str, where: str, *, required: bool = True) -> str | None:
        if key not in m or m[key] is None:
            if required:
                self.fail(self.map_line(m), where or "front matter", f"missing required key '{key}'")
            return None
        value = m[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(
                self.value_line(m, key), f"{where}.{key}" if where else key, "expected a non-empty string"
            )
        return str(value)

    def choice(
        self, m: CommentedMap, key: str, where: str, valid: tuple[str, ...], default: str | None
    ) -> str:
        if key not in m:
            if default is None:
                self.fail(
                    self.map_line(m),
                    where or "front matter",
                    f"missing required key '{key}'; valid: {', '.join(valid)}",
                )
            return default
        value = m[key]
        if not isinstance(value, str) or value not in valid:
            self.fail(
                self.value_line(m, key),
                f"{where}.{key}" if where else key,
                f"unknown {key} {_show(value)}; valid: {', '.join(valid)}",
            )
        return str(value)

    def number(self, m: CommentedMap, key: str, where: str) -> float:
        if key not in m:
            self.fail(self.map_line(m), where, f"missing required key '{key}'")
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(self.value_line(m, key), f"{where}.{key}", f"expected a number, got {_show(value)}")
        return float(value)

    def integer(
        self, m: CommentedMap, key: str, where: str, *, minimum: int | None = None, default: int | None = None
    ) -> int:
        if key not in m:
            if default is None:
                self.fail(self.map_line(m), where, f"missing required key '{key}'")
            return default
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(self.value_line(m, key), f"{where}.{key}", f"expected an integer, got {_show(value)}")
        if minimum is not None and value < minimum:
            self.fail(self.value_line(m, key), f"{where}.{key}", f"must be >= {minimum}, got {value}")
        return int(value)

    def string_list(self, m: CommentedMap, key: str, where: str) -> tuple[str, ...]:
        if key not in m or m[key] is None:
            return ()
        seq = self.sequence(m[key], self.value_line(m, key), f"{where}.{key}")
        out = []
        for i, item in enumerate(seq):
            if not isinstance(item, str) or not item.strip():
                self.fail(
                    self.item_line(seq, i), f"{where}.{key}[{i}]", f"expected a string, got {_show(item)}"
                )
            out.append(str(item))
        return tuple(out)

    # ---- the ADR

    def adr(self, path: Path, text: str, data: CommentedMap, span: FrontMatterSpan) -> Adr:
        self.known_keys(data, TOP_LEVEL_KEYS, "")
        title = self.string(data, "title", "")
        status = self.choice(data, "status", "", STATUSES, None)
        self.human_keys(data)
        auto_status = False
        if "auto_status" in data:
            if not isinstance(data["auto_status"], bool):
                self.fail(self.value_line(data, "auto_status"), "auto_status", "expected true or false")
            auto_status = bool(data["auto_status"])
        experiments = self.experiments(data)
        arms = {name for exp in experiments.values() for name in exp.arms}
        self.workspace = (path, self.paths(data, "config_dir"), self.paths(data, "python_path"), experiments)
        criteria = self.criteria(data, arms)
        body_line = span.closing_line + 1
        return Adr(
            path=path,
            text=text,
            front_matter=_plain(data),
            title=str(title),
            status=status,
            auto_status=auto_status,
            experiments=experiments,
            criteria=criteria,
            front_matter_lines=(span.first_line, span.closing_line - 1),
            body=text[span.body_start :],
            body_line=body_line,
            config_dirs=self.paths(data, "config_dir"),
            python_paths=self.paths(data, "python_path"),
        )

    def paths(self, data: CommentedMap, key: str) -> tuple[str, ...]:
        """`config_dir` / `python_path`: one relative folder or a list of them."""
        if key not in data or data[key] is None:
            return ()
        if isinstance(data[key], str) and data[key].strip():
            values: tuple[str, ...] = (str(data[key]),)
        else:
            values = self.string_list(data, key, "")
        for value in values:
            if Path(value).is_absolute() or ".." in Path(value).parts:
                self.fail(
                    self.value_line(data, key), key, f"{value!r} must be relative to the project, inside it"
                )
        return values

    def human_keys(self, data: CommentedMap) -> None:
        if "date" in data and data["date"] is not None:
            value = data["date"]
            ok = isinstance(value, _dt.date) or (
                isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None
            )
            if isinstance(value, str) and ok:
                try:
                    _dt.date.fromisoformat(value)
                except ValueError:
                    ok = False
            if not ok:
                self.fail(self.value_line(data, "date"), "date", f"expected YYYY-MM-DD, got {_show(value)}")
        for key in ("authors", "tags", "supersedes", "superseded_by"):
            if key not in data or data[key] is None:
                continue
            value = data[key]
            if isinstance(value, str):
                continue
            seq = self.sequence(value, self.value_line(data, key), key)
            for i, item in enumerate(seq):
                if not isinstance(item, (str, int)) or isinstance(item, bool):
                    self.fail(self.item_line(seq, i), f"{key}[{i}]", f"expected a string, got {_show(item)}")

    def experiments(self, data: CommentedMap) -> dict[str, Experiment]:
        if "experiments" not in data or data["experiments"] is None:
            return {}
        node = self.mapping(data["experiments"], self.value_line(data, "experiments"), "experiments")
        out: dict[str, Experiment] = {}
        for scale in node:
            where = f"experiments.{scale}"
            if not isinstance(scale, str) or not _NAME_RE.match(scale):
                self.fail(self.key_line(node, scale), where, "scale names are words like smoke or paper")
            exp = self.mapping(node[scale], self.value_line(node, scale), where)
            self.known_keys(exp, EXPERIMENT_KEYS, where)
            if "seeds" not in exp:
                self.fail(self.map_line(exp), where, "missing required key 'seeds'")
            seeds_node = self.sequence(exp["seeds"], self.value_line(exp, "seeds"), f"{where}.seeds")
            if not seeds_node:
                self.fail(self.value_line(exp, "seeds"), f"{where}.seeds", "needs at least one seed")
            seeds: list[int] = []
            for i, s in enumerate(seeds_node):
                if isinstance(s, bool) or not isinstance(s, int):
                    self.fail(
                        self.item_line(seeds_node, i),
                        f"{where}.seeds[{i}]",
                        f"expected an integer, got {_show(s)}",
                    )
                if s in seeds:
                    self.fail(self.item_line(seeds_node, i), f"{where}.seeds[{i}]", f"duplicate seed {s}")
                seeds.append(int(s))
            overrides = self.string_list(exp, "overrides", where)
            if "arms" not in exp:
                self.fail(self.map_line(exp), where, "missing required key 'arms'")
            arms_node = self.mapping(exp["arms"], self.value_line(exp, "arms"), f"{where}.arms")
            if not arms_node:
                self.fail(self.value_line(exp, "arms"), f"{where}.arms", "needs at least one arm")
            arms = {name: self.arm(arms_node, name, f"{where}.arms") for name in arms_node}
            for name, arm in arms.items():
                if arm.control is not None and (arm.control not in arms or arm.control == name):
                    valid = ", ".join(a for a in arms if a != name)
                    line = self.value_line(arms_node[name], "control")
                    self.fail(
                        line,
                        f"{where}.arms.{name}.control",
                        f"unknown control arm {arm.control!r}; valid: {valid}",
                    )
            out[str(scale)] = Experiment(
                str(scale), tuple(seeds), overrides, arms, self.key_line(node, scale)
            )
        return out

    def arm(self, arms_node: CommentedMap, name: Any, where: str) -> Arm:
        here = f"{where}.{name}"
        line = self.key_line(arms_node, name)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            self.fail(line, here, "arm names may use letters, digits, '_', '-' and '.'")
        value = arms_node[name]
        if isinstance(value, CommentedMap):
            self.known_keys(value, SWEEP_ARM_KEYS, here)
            sweep = self.string(value, "sweep", here, required="overrides" not in value)
            control = self.string(value, "control", here, required=False)
            return Arm(name, self.string_list(value, "overrides", here), sweep, line, control)
        if isinstance(value, CommentedSeq) or value is None:
            return Arm(name, self.string_list(arms_node, name, where), None, line)
        self.fail(
            self.value_line(arms_node, name),
            here,
            f"expected a list of Hydra overrides or {{sweep: NAME}}, got {_show(value)}",
        )

    def criteria(self, data: CommentedMap, arms: set[str]) -> list[Criterion]:
        if "criteria" not in data or data["criteria"] is None:
            return []
        seq = self.sequence(data["criteria"], self.value_line(data, "criteria"), "criteria")
        out: list[Criterion] = []
        seen: dict[str, int] = {}
        for i, node in enumerate(seq):
            where = f"criteria[{i}]"
            c = self.mapping(node, self.item_line(seq, i), where)
            self.known_keys(c, CRITERION_KEYS, where)
            cid = str(self.string(c, "id", where))
            if cid in seen:
                self.fail(
                    self.value_line(c, "id"),
                    f"{where}.id",
                    f"duplicate id {cid!r} (first in criteria[{seen[cid]}])",
                )
            seen[cid] = i
            claim = str(self.string(c, "claim", where))
            role = self.choice(c, "role", where, ROLES, None)
            arm = str(self.string(c, "arm", where))
            self.known_arm(c, "arm", where, arm, arms)
            baseline = self.string(c, "baseline", where, required=False)
            relation: str | None = None
            if baseline is not None:
                self.known_arm(c, "baseline", where, baseline, arms)
                if baseline == arm:
                    self.fail(self.value_line(c, "baseline"), f"{where}.baseline", "must differ from arm")
                relation = self.choice(c, "relation", where, RELATIONS, None)
            elif "relation" in c:
                self.fail(self.key_line(c, "relation"), f"{where}.relation", "needs a 'baseline' arm")
            metric = self.metric(c, where)
            if "statistic" not in c:
                self.fail(self.map_line(c), where, "missing required key 'statistic'")
            statistic = self.statistic(c, "statistic", f"{where}.statistic", allow_spread=True)
            mode = self.choice(c, "mode", where, MODES, "min")
            self.consistent(c, where, statistic, relation, mode, metric)
            compare = self.choice(c, "compare", where, COMPARES, None)
            threshold = self.number(c, "threshold", where)
            min_seeds = self.integer(c, "min_seeds", where, minimum=1, default=2)
            diverged = self.choice(c, "diverged", where, DIVERGED_RULES, "worst")
            out.append(
                Criterion(
                    id=cid,
                    claim=claim,
                    role=role,
                    arm=arm,
                    metric=metric,
                    statistic=statistic,
                    compare=compare,
                    threshold=threshold,
                    min_seeds=min_seeds,
                    mode=mode,
                    baseline=baseline,
                    relation=relation,
                    line=self.item_line(seq, i),
                    diverged=diverged,
                )
            )
        return out

    def metric(self, c: CommentedMap, where: str) -> str:
        """A metric adrlab logs: a misspelled one would silently turn the criterion into NO DATA."""
        metric = str(self.string(c, "metric", where))
        if metric not in LOGGED_METRICS and metric not in self.declared_metrics():
            valid = ", ".join(LOGGED_METRICS)
            line = self.value_line(c, "metric")
            self.fail(line, f"{where}.metric", f"adrlab never logs {metric!r}; valid: {valid}")
        return metric

    def declared_metrics(self) -> set[str]:
        """Names the arms' `_target_` optimizers declare (adrlab_metric_names), read from their
        source through the ADR's config_dir/python_path; composed only when a criterion needs it."""
        if not hasattr(self, "_declared"):
            if getattr(self, "workspace", None) is None:
                return set()
            path, config_dirs, python_paths, experiments = self.workspace
            arms = [exp.arm_overrides(a) for exp in experiments.values() for a, arm in exp.arms.items()
                    if arm.sweep is None]  # fmt: skip
            project = Path(path).resolve().parent.parent
            self._declared = declared_metrics(project, config_dirs, python_paths, arms)
        return self._declared

    def consistent(
        self, c: CommentedMap, where: str, stat: Statistic, relation: str | None, mode: str, metric: str
    ) -> None:
        """A ratio of a statistic that can change sign inverts the claim when the baseline's
        value is negative; ``spread kind: min|max`` is the best value over the sweep, which
        ``mode`` defines; a time_to_target axis must be one the metric has."""
        self.axis_fits(c, where, stat, metric)
        inner = stat.of if stat.name == "spread" and stat.of is not None else stat
        spread_ratio = stat.name == "spread" and stat.params.get("kind") == "ratio"
        if inner.name in SIGNED_STATISTICS and (relation == "ratio" or spread_ratio):
            key = "relation" if relation == "ratio" else "statistic"
            self.fail(
                self.value_line(c, key),
                f"{where}.{key}",
                f"a ratio of {inner.name} (which can change sign) can invert the claim; "
                "use relation: difference (or spread kind: range)",
            )
        kind = stat.params.get("kind")
        if stat.name == "spread" and kind in ("min", "max") and kind != mode:
            self.fail(
                self.value_line(c["statistic"], "kind"),
                f"{where}.statistic.kind",
                f"kind: {kind} is the best value over the sweep, but mode: {mode} makes the best the "
                f"{mode}imum; use kind: {mode} (or set mode: {kind})",
            )

    def axis_fits(self, c: CommentedMap, where: str, stat: Statistic, metric: str) -> None:
        """epoch and seconds need a per-epoch metric, step a per-step one (an optimizer's declared
        metrics are per step); tokens fit both."""
        inner = stat.of if stat.name == "spread" and stat.of is not None else stat
        axis = inner.params.get("axis")
        misfit = AXIS_MISFITS.get((str(axis), metric in EPOCH_METRICS))
        if inner.name != "time_to_target" or misfit is None:
            return
        node = c["statistic"]["of"] if inner is not stat else c["statistic"]
        kind = "per-epoch" if metric in EPOCH_METRICS else "per-step"
        self.fail(
            self.value_line(node, "axis"),
            f"{where}.statistic.axis",
            f"time_to_target axis {axis} does not fit {metric} ({kind}): {misfit}",
        )

    def known_arm(self, c: CommentedMap, key: str, where: str, arm: str, arms: set[str]) -> None:
        if arm not in arms:
            valid = ", ".join(sorted(arms)) if arms else "none declared under experiments"
            self.fail(self.value_line(c, key), f"{where}.{key}", f"unknown arm {arm!r}; valid: {valid}")

    def statistic(self, parent: CommentedMap, key: str, where: str, *, allow_spread: bool) -> Statistic:
        node = parent[key]
        line = self.value_line(parent, key)
        names = [n for n in STATISTICS if allow_spread or n != "spread"]
        valid = ", ".join(names)
        if isinstance(node, str):
            name, m = node, None
        elif isinstance(node, CommentedMap):
            if "name" not in node:
                self.fail(self.map_line(node), where, f"a statistic mapping needs 'name'; valid: {valid}")
            name, m = node["name"], node
            line = self.value_line(node, "name")
        else:
            self.fail(line, where, f"expected a statistic name or mapping, got {_show(node)}")
        if not isinstance(name, str) or name not in names:
            self.fail(line, where, f"unknown statistic {_show(name)}; valid: {valid}")
        required = STATISTICS[name][0]
        if m is None:
            if required:
                self.fail(
                    line,
                    where,
                    f"{name} needs {', '.join(required)}: use {{name: {name}, {required[0]}: ...}}",
                )
            return Statistic(name)
        params, of = self.statistic_params(m, name, where)
        if "start" in params and "end" in params and params["start"] > params["end"]:
            self.fail(
                self.value_line(m, "end"),
                f"{where}.end",
                f"end {params['end']} is before start {params['start']}",
            )
        if name == "spread":
            params.setdefault("kind", "ratio")
        return Statistic(name, params, of)

    def statistic_params(
        self, m: CommentedMap, name: str, where: str
    ) -> tuple[dict[str, Any], Statistic | None]:
        """The parameters of statistic ``name`` given as mapping ``m`` (and a spread's ``of``)."""
        required, optional = STATISTICS[name]
        for k in m:
            if k == "relative_to" and name in RELATIVE_TO_REFUSED:
                relative = ", ".join(n for n, (_, opt) in STATISTICS.items() if "relative_to" in opt)
                self.fail(
                    self.key_line(m, k),
                    f"{where}.{k}",
                    f"relative_to does not apply to {name}: it {RELATIVE_TO_REFUSED[name]}; "
                    f"valid with: {relative}",
                )
            if k != "name" and k not in required + optional:
                allowed = ", ".join(("name", *required, *optional))
                self.fail(
                    self.key_line(m, k), f"{where}.{k}", f"unknown parameter for {name}; valid: {allowed}"
                )
        for k in required:
            if k not in m:
                self.fail(self.map_line(m), where, f"{name} needs '{k}'")
        params: dict[str, Any] = {}
        of: Statistic | None = None
        for k in (k for k in (*required, *optional) if k in m):
            if k == "of":
                of = self.statistic(m, "of", f"{where}.of", allow_spread=False)
            elif k == "over":
                params[k] = str(self.string(m, "over", where))
            elif k == "relative_to":
                params[k] = self.numeric_param(m, k, where)
            elif k in CHOICE_PARAMS:  # kind (spread), axis (time_to_target)
                params[k] = self.choice(m, k, where, *CHOICE_PARAMS[k])
            elif k in ("epoch", "window"):
                params[k] = self.integer(m, k, where, minimum=1)
            else:  # start / end: epochs or steps
                value = m[k]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    self.fail(self.value_line(m, k), f"{where}.{k}", f"expected a number, got {_show(value)}")
                params[k] = int(value) if float(value).is_integer() else float(value)
        return params, of

    def numeric_param(self, m: CommentedMap, key: str, where: str) -> str:
        """A param every run logs as a number: a misspelled one would exclude every run."""
        name = str(self.string(m, key, where))
        if name not in NUMERIC_PARAMS:
            self.fail(
                self.value_line(m, key),
                f"{where}.{key}",
                f"adrlab never logs {name!r} as a number; valid: {', '.join(NUMERIC_PARAMS)}",
            )
        return name


def _kind(node: Any) -> str:
    if isinstance(node, CommentedMap):
        return "a mapping"
    if isinstance(node, CommentedSeq):
        return "a list"
    return _show(node)


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(str(value))
    return repr(_plain(value))


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers and scalars as plain Python values."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


# --------------------------------------------------------------------------- line-level edits

_PLAIN_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .\-/]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}
_VALUE_RE = re.compile(
    r"""^(?P<head>(?P<key>[^\s:#][^:#]*?)[ \t]*:)(?P<gap>[ \t]*)
        (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\r\n]*?)
        (?P<tail>[ \t]+\#[^\r\n]*|[ \t]*)(?P<eol>\r?\n?)$""",
    re.VERBOSE,
)


def set_front_matter_value(text: str, key: str, value: str, *, path: str | Path = "<adr>") -> str:
    """Replace the value of one top-level front matter key by editing only that line.

    The quoting style of the old value (double, single or plain), a trailing comment, the
    line ending and every other byte of the file are kept. The key must exist once at top
    level with a scalar value on its own line; anything else raises AdrError rather than
    guessing. The result is re-parsed to prove the key now holds ``value``.
    """
    span = find_front_matter(text, path)
    lines = text[span.yaml_start : span.yaml_end].splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if (m := _VALUE_RE.match(line)) and m.group("key") == key]
    if not hits:
        raise AdrError(path, None, f"front matter has no top-level key {key!r} to edit")
    if len(hits) > 1:
        raise AdrError(path, span.first_line + hits[1], f"front matter key {key!r} appears twice")
    i = hits[0]
    m = _VALUE_RE.match(lines[i])
    assert m is not None
    old = m.group("value")
    if old in ("", "|", ">") or old.startswith(("|", ">", "&", "*", "!", "[", "{")):
        raise AdrError(path, span.first_line + i, f"front matter key {key!r} is not a one-line scalar")
    if old.startswith('"'):
        new = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif old.startswith("'"):
        new = "'" + value.replace("'", "''") + "'"
    elif _PLAIN_SAFE.match(value) and value.lower() not in _YAML_WORDS and value == value.strip():
        new = value
    else:
        new = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    gap = m.group("gap") or " "
    lines[i] = f"{m.group('head')}{gap}{new}{m.group('tail')}{m.group('eol')}"
    out = text[: span.yaml_start] + "".join(lines) + text[span.yaml_end :]
    data, _ = load_front_matter(out, path)
    if _plain(data.get(key)) != value:
        raise AdrError(path, span.first_line + i, f"editing {key!r} did not yield {value!r}; file left as is")
    return out
