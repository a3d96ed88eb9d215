"""Sweep specs (sweeps/<name>.yaml): parsed and validated before any worker starts."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from adrlab.config import ConfigError, compose, compose_explained, conf_dir, project_root

SAMPLERS = ("tpe", "random", "grid", "gp")
PRUNERS = ("median", "hyperband", "none")
STATISTICS = ("best", "final")
DIRECTIONS = ("minimize", "maximize")
PARAM_TYPES = ("float", "int", "categorical")
# `seeds: from_config`: no seed loop per trial; each trial runs with the seed its config has
# (the default, or a swept `seed`), as in a Hydra multirun.
SEEDS_FROM_CONFIG = "from_config"
CONFIG_GROUPS = ("optimizer", "regularizer", "lr_schedule", "wd_schedule", "model", "data", "experiment")


class SpecError(ValueError):
    """A sweep spec that cannot run; the message names the key and the reason."""


@dataclass
class Param:
    key: str  # a config group (categorical over its options) or a dotted config path
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    when: dict[str, list[Any]] = field(default_factory=dict)  # active only if these params took these values

    def is_active(self, values: dict[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when.items())

    def grid_values(self) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices)
        raise SpecError(f"space.{self.key}: the grid sampler needs categorical parameters (give `choices`)")


@dataclass
class SweepSpec:
    name: str
    path: Path
    description: str
    overrides: list[str]
    space: list[Param]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    n_trials: int
    metric: str
    statistic: str
    direction: str
    seeds: list[int | None]  # [None] for jobs: each job carries its own seed
    enqueue: list[dict[str, Any]]
    experiment: str
    # A fixed list of runs instead of a search (ADR experiments): job name → overrides (seed
    # included). The space is then one categorical `job` parameter walked by the grid sampler.
    jobs: dict[str, list[str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags on every trial run

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.space]

    def overrides_for(self, values: dict[str, Any], extra: list[str] | None = None) -> list[str]:
        """A trial's parameter values → Hydra overrides (groups first so their keys exist)."""
        if self.jobs:
            return [*self.overrides, *self.jobs[values["job"]], *(extra or [])]
        groups = [f"{k}={values[k]}" for k in self.keys if k in values and k in CONFIG_GROUPS]
        paths = [f"{k}={_fmt(values[k])}" for k in self.keys if k in values and k not in CONFIG_GROUPS]
        return [*self.overrides, *groups, *paths, *(extra or [])]

    def objective_of(self, epochs: list[dict[str, float]]) -> float:
        values = [e[self.metric] for e in epochs if self.metric in e]
        if not values:
            return float("inf") if self.direction == "minimize" else float("-inf")
        if self.statistic == "final":
            return values[-1]
        return min(values) if self.direction == "minimize" else max(values)

    def make_sampler(self, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
        kind = self.sampler["name"]
        seed = self.sampler.get("seed")
        seed = None if seed is None else int(seed) + seed_offset
        if kind == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=int(self.sampler.get("n_startup_trials", 10)),
                multivariate=True,
                group=any(p.when for p in self.space),
            )
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        # Grid points are enqueued as fixed trials (see load_spec); anything beyond them is random.
        return optuna.samplers.RandomSampler(seed=seed)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        kind = self.pruner["name"]
        if kind == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=int(self.pruner.get("n_startup_trials", 5)),
                n_warmup_steps=int(self.pruner.get("n_warmup_steps", 2)),
            )
        if kind == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=int(self.pruner.get("min_resource", 1)),
                max_resource=self.pruner.get("max_resource", "auto"),
                reduction_factor=int(self.pruner.get("reduction_factor", 3)),
            )
        return optuna.pruners.NopPruner()

    def grid_size(self) -> int:
        return len(list(itertools.product(*(p.grid_values() for p in self.space))))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def sweeps_dir() -> Path:
    return project_root() / "sweeps"


def resolve_spec_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    candidate = sweeps_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in sweeps_dir().glob("*.yaml"))
    raise SpecError(f"no sweep spec {name_or_path!r}; known specs in sweeps/: {', '.join(known) or '(none)'}")


def _require(node: dict, key: str, where: str) -> Any:
    if key not in node:
        raise SpecError(f"{where}: missing required key `{key}`")
    return node[key]


def _known_keys(node: dict, allowed: set[str], where: str) -> None:
    unknown = set(node) - allowed
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(allowed)}")


def _parse_param(key: str, node: Any) -> Param:
    where = f"space.{key}"
    if not isinstance(node, dict):
        raise SpecError(f"{where}: expected a mapping with `type`, got {node!r}")
    _known_keys(node, {"type", "low", "high", "log", "step", "choices", "when"}, where)
    kind = _require(node, "type", where)
    if kind not in PARAM_TYPES:
        raise SpecError(f"{where}.type={kind!r} is not valid; choose one of: {', '.join(PARAM_TYPES)}")
    when = {k: (v if isinstance(v, list) else [v]) for k, v in (node.get("when") or {}).items()}
    if kind == "categorical":
        choices = list(_require(node, "choices", where))
        if not choices:
            raise SpecError(f"{where}.choices must not be empty")
        return Param(key, kind, choices=choices, when=when)
    low, high = float(_require(node, "low", where)), float(_require(node, "high", where))
    log = bool(node.get("log", False))
    if not low < high:
        raise SpecError(f"{where}: low={low} must be < high={high}")
    if log and low <= 0:
        raise SpecError(f"{where}: a log range needs low > 0 (got {low})")
    step = node.get("step")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise SpecError(f"{where}: an int range needs integer bounds")
    return Param(
        key, kind, low=low, high=high, log=log, step=None if step is None else float(step), when=when
    )


TOP_LEVEL_KEYS = {
    "name",
    "description",
    "base",
    "space",
    "sampler",
    "pruner",
    "n_trials",
    "objective",
    "seeds",
    "enqueue",
    "tracking",
    "jobs",
    "tags",
}


def load_spec(
    name_or_path: str, cli_overrides: list[str] | None = None, n_trials: int | None = None
) -> SweepSpec:
    path = resolve_spec_path(name_or_path)
    raw = _read_spec_file(path)
    where = path.name
    base = raw.get("base") or {}
    _known_keys(base, {"overrides"}, f"{where}: base")
    objective = _require(raw, "objective", where)
    _known_keys(objective, {"metric", "statistic", "direction"}, f"{where}: objective")
    sampler = {"name": "tpe", "seed": 0, **(raw.get("sampler") or {})}
    pruner = {"name": "median", **(raw.get("pruner") or {})}
    _check_choice("sampler.name", sampler["name"], SAMPLERS)
    _check_choice("pruner.name", pruner["name"], PRUNERS)
    statistic = objective.get("statistic", "best")
    direction = objective.get("direction", "minimize")
    _check_choice("objective.statistic", statistic, STATISTICS)
    _check_choice("objective.direction", direction, DIRECTIONS)
    jobs = {str(k): [str(o) for o in v] for k, v in (raw.get("jobs") or {}).items()}
    if jobs:
        # Every job is enqueued as a fixed trial: workers pop them from the storage one at a
        # time, so none runs twice and none is skipped (a grid sampler shared by several
        # workers can hand out the same point twice).
        raw["space"] = {"job": {"type": "categorical", "choices": list(jobs)}}
        raw["enqueue"] = [{"job": name} for name in jobs]
        sampler = {"name": "random", "seed": 0}
        pruner = {"name": "none"}
        raw["n_trials"] = len(jobs) if n_trials is None else n_trials
    space_node = _require(raw, "space", where)
    if not isinstance(space_node, dict) or not space_node:
        raise SpecError(f"{where}: `space` must be a non-empty mapping of config paths to distributions")
    name = str(raw.get("name", path.stem))
    if cli_overrides:
        # The same spec with other overrides (e.g. scale=paper) is a different study.
        name += "-" + hashlib.sha256(" ".join(cli_overrides).encode()).hexdigest()[:8]
    spec = SweepSpec(
        name=name,
        path=path,
        description=str(raw.get("description", "")),
        overrides=[*list(base.get("overrides") or []), *(cli_overrides or [])],
        space=[_parse_param(k, v) for k, v in space_node.items()],
        sampler=sampler,
        pruner=pruner,
        n_trials=int(n_trials if n_trials is not None else raw.get("n_trials", 20)),
        metric=str(objective.get("metric", "val_ppl")),
        statistic=statistic,
        direction=direction,
        seeds=[] if raw.get("seeds") == SEEDS_FROM_CONFIG else [int(s) for s in (raw.get("seeds") or [0])],
        enqueue=list(raw.get("enqueue") or []),
        experiment=str((raw.get("tracking") or {}).get("experiment", f"sweep-{name}")),
        jobs=jobs,
        tags={str(k): str(v) for k, v in (raw.get("tags") or {}).items()},
    )
    if jobs or not spec.seeds:
        spec.seeds = [None]  # each job (or grid point) carries its own seed
    if spec.sampler["name"] == "grid":
        _enqueue_grid(spec, fixed_n_trials=n_trials is not None or "n_trials" in raw)
    if spec.n_trials <= 0:
        raise SpecError(f"n_trials={spec.n_trials} must be > 0")
    validate_against_config(spec)
    return spec


def _read_spec_file(path: Path) -> dict[str, Any]:
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    _known_keys(raw, TOP_LEVEL_KEYS, path.name)
    return raw


def _check_choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SpecError(f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")


def _enqueue_grid(spec: SweepSpec, *, fixed_n_trials: bool) -> None:
    """Shared by several workers, Optuna's grid sampler can hand out one point twice and skip
    another. Enqueued fixed trials are popped atomically from the storage instead."""
    grid = [
        dict(zip(spec.keys, values)) for values in itertools.product(*(p.grid_values() for p in spec.space))
    ]
    spec.enqueue = [*spec.enqueue, *(g for g in grid if g not in spec.enqueue)]
    if not fixed_n_trials:
        spec.n_trials = len(grid)


def _config_has(cfg: DictConfig, dotted: str) -> bool:
    return OmegaConf.select(cfg, dotted, default="__missing__") != "__missing__"


def validate_against_config(spec: SweepSpec) -> None:
    """Every path must exist in the config it would be applied to; every choice must compose."""
    if spec.jobs:
        for job, overrides in spec.jobs.items():
            try:
                compose([*spec.overrides, *overrides])
            except Exception as exc:
                raise SpecError(f"jobs.{job}: does not compose: {str(exc).splitlines()[0]}") from exc
        return
    by_key = {p.key: p for p in spec.space}
    for p in spec.space:
        for cond_key, allowed in p.when.items():
            if cond_key not in by_key or by_key[cond_key].type != "categorical":
                raise SpecError(
                    f"space.{p.key}.when: `{cond_key}` must be a categorical parameter of this space"
                )
            bad = [v for v in allowed if v not in by_key[cond_key].choices]
            if bad:
                raise SpecError(
                    f"space.{p.key}.when: {cond_key} never takes {bad}; "
                    f"its choices: {by_key[cond_key].choices}"
                )
    try:
        base = compose(spec.overrides)
    except ConfigError as exc:
        raise SpecError(f"base overrides do not compose: {exc}") from exc
    except Exception as exc:
        raise SpecError(f"base overrides do not compose: {str(exc).splitlines()[0]}") from exc
    for p in spec.space:
        if p.key in CONFIG_GROUPS:
            if p.type != "categorical":
                raise SpecError(f"space.{p.key}: a config group must be categorical over its options")
            options = sorted(q.stem for q in (conf_dir() / p.key).glob("*.yaml"))
            bad = [c for c in p.choices if c not in options]
            if bad:
                raise SpecError(f"space.{p.key}: unknown option(s) {bad}; valid: {', '.join(options)}")
            continue
        context = [f"{k}={v[0]}" for k, v in p.when.items()]
        cfg = compose([*spec.overrides, *context]) if context else base
        if not _config_has(cfg, p.key):
            raise SpecError(
                f"space.{p.key}: no such config path"
                + (f" when {', '.join(context)}" if context else "")
                + "; use a dotted path of the composed config (adrlab run --cfg job shows it)"
            )
    for i, point in enumerate(spec.enqueue):
        unknown = set(point) - set(spec.keys)
        if unknown:
            raise SpecError(f"enqueue[{i}]: {sorted(unknown)} are not parameters of the space {spec.keys}")


# --------------------------------------------------------------------------- multirun


def _sweep_values(override: Any, groups: dict[str, list[str]]) -> list[Any]:
    """The values of one Hydra sweep override (a,b / choice() / range() / glob() of a group)."""
    from hydra.core.override_parser.types import QuotedString

    where = f"-m {override.input_line}"
    if override.is_interval_sweep():
        raise SpecError(f"{where}: interval() needs a sampler, not a grid; write a sweeps/ spec instead")
    if override.value_type is not None and override.value_type.name == "GLOB_CHOICE_SWEEP":
        if override.key_or_group not in groups:
            raise SpecError(f"{where}: glob() selects options of a config group ({', '.join(groups)})")
        return override.value().filter(groups[override.key_or_group])
    values = [v.text if isinstance(v, QuotedString) else v for v in override.sweep_iterator()]
    bad = [v for v in values if not isinstance(v, (str, int, float, bool))]
    if bad:
        raise SpecError(f"{where}: a grid takes plain values (numbers, strings, booleans), not {bad}")
    return values


def multirun_spec(overrides: list[str]) -> dict[str, Any]:
    """`adrlab run -m` overrides → a sweep spec document (as in sweeps/*.yaml): the swept keys
    (a,b, choice(), range(), glob() over a group) form a grid walked once, point by point, each
    with the seed its config says; the other overrides are the base. Named
    multirun-<swept keys>-<hash of the overrides>, so the same command resumes its study."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from adrlab.config import config_groups, normalize_overrides

    overrides = normalize_overrides(list(overrides))
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise SpecError(f"-m: {str(exc).splitlines()[0]}") from exc
    groups = config_groups()
    base: list[str] = []
    space: dict[str, Any] = {}
    for override in parsed:
        if not override.is_sweep_override():
            base.append(override.input_line)
            continue
        if override.get_key_element() != override.key_or_group:
            raise SpecError(f"-m {override.input_line}: sweep a key as key=a,b (no +, ~ or @package)")
        space[override.key_or_group] = {"type": "categorical", "choices": _sweep_values(override, groups)}
    if not space:
        raise SpecError(
            "-m needs at least one swept override, e.g. optimizer=adamw,rmsuon or seed=range(1,4)"
        )
    keys = "-".join(space).replace("/", "_")[:48]
    digest = hashlib.sha256(" ".join(overrides).encode()).hexdigest()[:8]
    return {
        "name": f"multirun-{keys}-{digest}",
        "description": "adrlab run -m " + " ".join(overrides),
        "base": {"overrides": base},
        "space": space,
        "sampler": {"name": "grid", "seed": 0},
        "pruner": {"name": "none"},
        "objective": {"metric": "val_ppl", "statistic": "best", "direction": "minimize"},
        "seeds": SEEDS_FROM_CONFIG,
    }


def write_multirun_spec(overrides: list[str], folder: Path) -> Path:
    """Write the multirun's spec to folder/<name>.yaml (workers load it from there), after
    composing every grid point, so a bad value or combination stops the command before any
    worker starts."""
    document = multirun_spec(overrides)
    base = document["base"]["overrides"]
    space = document["space"]
    for point in itertools.product(*(param["choices"] for param in space.values())):
        chosen = [f"{key}={_fmt(value)}" for key, value in zip(space, point)]
        try:
            compose_explained([*base, *chosen])
        except ConfigError as exc:
            raise SpecError(f"-m point {' '.join(chosen)}: {exc}") from exc
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{document['name']}.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(document)))
    load_spec(str(path))  # the same validation `adrlab sweep` does
    return path
