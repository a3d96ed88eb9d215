"""What a run is called in `mlflow ui`: a short name that tells runs apart in the runs table,
and, for an ADR's runs, a description that names the ADR, the arm and the seed.

One function decides the name for every kind of run, from the context its caller has:

- an ADR run (tag adrlab.adr): `0002 v_rmsuon s3` (ADR number, arm, seed);
- a sweep trial (tag adrlab.trial and the sampled values): `t07 λ=0.031 cosine wd:follow_lr`;
- a plain run: the preset or optimizer, then what differs from the defaults, then the seed:
  `rmsuon wd=0.1 s42`, `adamw cosine lr=0.001 s1`, `v_rmsuon ep=3 s3`.

An explicit `tracking.run_name=...` always wins. Tags are never changed by naming.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from adrlab import tracking
from adrlab.config import compose, flatten

# Config groups whose chosen option is shown by its name; the prefix keeps e.g. the LR and the
# WD schedule's `constant` apart.
GROUP_PREFIX = {
    "optimizer": "",
    "regularizer": "",
    "lr_schedule": "",
    "wd_schedule": "wd:",
    "model": "model:",
    "data": "",
    "scale": "",
}
KEY_ALIASES = {
    "regularizer.weight_decay": "wd",
    "optimizer.lr": "lr",
    "trainer.epochs": "ep",
    "trainer.batch_size": "bs",
    "data.seq_len": "seq",
    "model.d_model": "d",
    "model.n_layers": "layers",
}
# Settings that differ are listed in this order of their section (what the optimizer research
# varies first, sizes last); sections not named here come after.
SECTION_ORDER = ("optimizer", "regularizer", "lr_schedule", "wd_schedule", "trainer", "data", "model")
# Labels, machine settings and where files are found, not what the run trains: never part of a
# name (the Dataset column shows the data itself).
IGNORED = (
    "tracking.",
    "tags.",
    "resume",
    "runs_dir",
    "arm",
    "seed",
    "trainer.progress",
    "trainer.threads",
    "data.root",
    "data.cache_dir",
    "data.download",
)
MAX_LENGTH = 120


def run_name(
    cfg: DictConfig, tags: Mapping[str, Any] | None = None, sampled: Mapping[str, Any] | None = None
) -> str:
    """The run's name: explicit, ADR, sweep trial or plain (see the module docstring).

    tags: the run's tags (adrlab.adr, adrlab.trial say which kind it is); sampled: a trial's
    sampled values (key → value), a `seed` key among them when a trial trains several seeds.
    """
    tags = tags or {}
    if cfg.tracking.get("run_name"):
        return str(cfg.tracking.run_name)
    if tags.get(tracking.TAG_ADR):
        return f"{tags[tracking.TAG_ADR]} {cfg.arm or 'run'} s{cfg.seed}"
    if tags.get(tracking.TAG_TRIAL) is not None and sampled is not None:
        items = sorted(sampled.items(), key=lambda kv: not _is_lambda(kv[0]))  # a λ sweep's axis first
        parts = [f"t{int(tags[tracking.TAG_TRIAL]):02d}", *(_sampled_part(k, v) for k, v in items)]
        return _join(parts)
    return _join(_differing_parts(cfg), tail=f"s{cfg.seed}")


def description(cfg: DictConfig, tags: Mapping[str, Any]) -> str | None:
    """The run's description (markdown, mlflow.note.content) for an ADR run, else None."""
    number = tags.get(tracking.TAG_ADR)
    if not number:
        return None
    title = tags.get(tracking.TAG_ADR_TITLE) or f"ADR-{number}"
    scale = tags.get(tracking.TAG_ADR_SCALE) or cfg.scale
    return f"{title}\n\nADR-{number} · arm `{cfg.arm}` · seed {cfg.seed} · scale {scale}"


def labels(cfg: DictConfig, tags: Mapping[str, Any]) -> dict[str, str]:
    """MLflow's name and description tags for a new run (the description only for ADR runs)."""
    out = {tracking.TAG_RUN_NAME: run_name(cfg, tags)}
    note = description(cfg, tags)
    if note:
        out[tracking.TAG_NOTE] = note
    return out


# --------------------------------------------------------------------------- rendering


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ",".join(_value(v) for v in value)
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


def _key(key: str) -> str:
    return KEY_ALIASES.get(key, key.rsplit(".", 1)[-1])


def _is_lambda(key: str) -> bool:
    return "weight_decay" in key or key.rsplit(".", 1)[-1] in ("lam", "lambda")


def _sampled_part(key: str, value: Any) -> str:
    group = key.removesuffix(".name")
    if group in GROUP_PREFIX:
        return f"{GROUP_PREFIX[group]}{value}"
    if key == "seed":
        return f"s{value}"
    if key == "job":  # a study of fixed jobs: the job's own name says what it is
        return str(value)
    if _is_lambda(key):
        return f"λ={_value(value)}"  # a λ sweep's axis, as its report calls it
    return f"{_key(key)}={_value(value)}"


def _join(parts: list[str], tail: str = "") -> str:
    """Parts in order, cut to MAX_LENGTH; the tail (the seed) always stays."""
    text = " ".join(p for p in parts if p)
    room = MAX_LENGTH - len(tail) - 1
    if len(text) > room:
        text = text[: room - 1] + "…"
    return f"{text} {tail}".strip()


# --------------------------------------------------------------------------- plain runs


@functools.lru_cache(maxsize=32)
def _reference(overrides: tuple[str, ...]) -> dict[str, Any] | None:
    """The flattened config these overrides compose to; None when they do not compose."""
    try:
        return flatten(compose(list(overrides)))
    except Exception:  # a name is only a label: never fail a run over it
        return None


def _choices(values: Mapping[str, Any]) -> dict[str, str]:
    return {g: str(values.get(f"{g}.name", values.get(g))) for g in GROUP_PREFIX}


def _differing_parts(cfg: DictConfig) -> list[str]:
    """Lead (preset or optimizer), then the group options and settings that differ from what
    the preset (or the defaults) and the chosen options give."""
    values = flatten(cfg)
    preset = [f"experiment={cfg.arm}"] if cfg.arm and _reference((f"experiment={cfg.arm}",)) else []
    defaults = _reference(tuple(preset)) or {}
    choices = _choices(values)
    lead = str(cfg.arm) if preset else choices["optimizer"]
    parts = [lead]
    for group, option in choices.items():
        if option != _choices(defaults).get(group) and not (group == "optimizer" and not preset):
            parts.append(f"{GROUP_PREFIX[group]}{option}")
    chosen = tuple([*preset, *(f"{g}={o}" for g, o in choices.items() if g != "scale"), f"scale={cfg.scale}"])
    baseline = _reference(chosen) or defaults
    order = {section: i for i, section in enumerate(SECTION_ORDER)}
    for key, value in sorted(values.items(), key=lambda kv: order.get(kv[0].split(".")[0], len(order))):
        if key.startswith(IGNORED) or key.endswith(".name") or key == "scale":
            continue
        if key not in baseline or baseline[key] != value:
            parts.append(f"{_key(key)}={_value(value)}")
    if not preset and cfg.arm:
        parts.insert(0, str(cfg.arm))
    return parts
