"""Structured configs: the schema every composed run config is checked against.

Each option of a config group (conf/<group>/<option>.yaml) extends a dataclass schema
registered here, so an unknown key or a wrongly typed value fails at compose time.
Ranges and cross-group compatibility are checked by `validate()`, which runs on the
dataclass objects (OmegaConf.to_object calls each __post_init__).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from adrlab import extensions
from adrlab.errors import ConfigError


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _one_of(group: str, key: str, value: Any, valid: tuple[str, ...]) -> None:
    _check(value in valid, f"{group}.{key}={value!r} is not valid; choose one of: {', '.join(valid)}")


def _positive(group: str, key: str, value: float | int, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    _check(ok, f"{group}.{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def _betas(group: str, key: str, betas: list[float]) -> None:
    _check(
        len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
        f"{group}.{key}={list(betas)!r} must be two numbers in [0, 1)",
    )


# --------------------------------------------------------------------------- optimizer


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 3e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _positive("optimizer", "lr", self.lr)
        _betas("optimizer", "betas", self.betas)
        _positive("optimizer", "eps", self.eps)


@dataclass
class AdamWConfig(OptimizerConfig):
    name: str = "adamw"


NS_SCHEDULE_NAMES = ("quintic", "polar_express")  # adrlab.optim.muon.NS_SCHEDULES (kept import-free)


@dataclass
class HybridConfig(OptimizerConfig):
    """Optimizers that give hidden matrices a structured update and AdamW to the rest."""

    ns_steps: int = 5
    # Newton–Schulz coefficient schedule: quintic (Keller Jordan's, torch.optim.Muon's; default) or
    # polar_express (Amsel et al. 2025); ns_coefficients, when set, lists explicit (a, b, c)
    # triples, one per iteration (the last repeats), and takes precedence over the name.
    ns_schedule: str = "quintic"
    ns_coefficients: list[list[float]] | None = None
    # AdamW group (embeddings, tied head, 1-D parameters); null means "same as the structured group".
    adamw_lr: float | None = None
    adamw_betas: list[float] | None = None
    adamw_eps: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("optimizer", "ns_steps", self.ns_steps)
        _one_of("optimizer", "ns_schedule", self.ns_schedule, NS_SCHEDULE_NAMES)
        if self.ns_coefficients is not None:
            _check(
                len(self.ns_coefficients) > 0 and all(len(t) == 3 for t in self.ns_coefficients),
                f"optimizer.ns_coefficients={self.ns_coefficients!r} must list (a, b, c) triples, "
                "one per Newton–Schulz iteration",
            )
        if self.adamw_lr is not None:
            _positive("optimizer", "adamw_lr", self.adamw_lr)
        if self.adamw_betas is not None:
            _betas("optimizer", "adamw_betas", self.adamw_betas)


MUON_ADJUST_LR = ("original", "match_rms_adamw")


@dataclass
class MuonConfig(HybridConfig):
    name: str = "muon"
    lr: float = 0.02
    momentum: float = 0.95
    nesterov: bool = True
    adjust_lr: str = "original"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.momentum < 1.0, f"optimizer.momentum={self.momentum} must be in [0, 1)")
        _one_of("optimizer", "adjust_lr", self.adjust_lr, MUON_ADJUST_LR)


@dataclass
class RMSuonConfig(HybridConfig):
    name: str = "rmsuon"


@dataclass
class AdaRMSuonConfig(HybridConfig):
    name: str = "ada_rmsuon"
    # True: update = lr * E * O / ||O||_F (the normalisation the method's description states);
    # False: update = lr * E * O (what the reference code ran). See docs/optimizers.md.
    normalize: bool = True


OPTIMIZERS: dict[str, type[OptimizerConfig]] = {
    "adamw": AdamWConfig,
    "muon": MuonConfig,
    "rmsuon": RMSuonConfig,
    "ada_rmsuon": AdaRMSuonConfig,
}
# Optimizers whose every parameter has a second-moment estimate v̂ (needed by sqrt_v).
OPTIMIZERS_WITH_V = ("adamw", "rmsuon", "ada_rmsuon")

# --------------------------------------------------------------------------- regularizer

DECAY_SCOPES = ("all", "no_1d", "matrices")


@dataclass
class RegularizerConfig:
    name: str = MISSING
    # all: every parameter; no_1d: skip norms/biases (nanoGPT); matrices: hidden 2-D weights only.
    scope: str = "all"

    def __post_init__(self) -> None:
        _one_of("regularizer", "scope", self.scope, DECAY_SCOPES)


@dataclass
class NoRegularizerConfig(RegularizerConfig):
    name: str = "none"


@dataclass
class L2Config(RegularizerConfig):
    """Coupled: λθ is added to the gradient before the optimizer sees it."""

    name: str = "l2"
    weight_decay: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("regularizer", "weight_decay", self.weight_decay, allow_zero=True)


@dataclass
class DecoupledConfig(RegularizerConfig):
    """θ ← θ(1 − η_t λ_t), outside the adaptive update."""

    name: str = "decoupled"
    weight_decay: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("regularizer", "weight_decay", self.weight_decay, allow_zero=True)


TIMESCALE_UNITS = ("per_step", "lr_scaled")


@dataclass
class TimescaleConfig(RegularizerConfig):
    """ADR-0001: λ = 1 − ε^(1/S), S = ceil(N/B), derived from the real train split at build time."""

    name: str = "timescale"
    epsilon: float = 1e-3
    # per_step: θ ← (1 − λ)θ as the ADR derives it; lr_scaled: θ ← (1 − ηλ)θ as the reference code applied it.
    units: str = "per_step"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 < self.epsilon < 1.0, f"regularizer.epsilon={self.epsilon} must be in (0, 1)")
        _one_of("regularizer", "units", self.units, TIMESCALE_UNITS)


@dataclass
class SqrtVConfig(RegularizerConfig):
    """ADR-0002 direct penalty: update += λ·√v̂ (scaled by the lr), replacing weight decay."""

    name: str = "sqrt_v"
    weight_decay: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("regularizer", "weight_decay", self.weight_decay, allow_zero=True)


REGULARIZERS: dict[str, type[RegularizerConfig]] = {
    "none": NoRegularizerConfig,
    "l2": L2Config,
    "decoupled": DecoupledConfig,
    "timescale": TimescaleConfig,
    "sqrt_v": SqrtVConfig,
}

# --------------------------------------------------------------------------- schedules


@dataclass
class LRScheduleConfig:
    name: str = MISSING
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _positive("lr_schedule", "warmup_steps", self.warmup_steps, allow_zero=True)


@dataclass
class ConstantLRConfig(LRScheduleConfig):
    name: str = "constant"


@dataclass
class CosineLRConfig(LRScheduleConfig):
    name: str = "cosine"
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.min_ratio <= 1.0, f"lr_schedule.min_ratio={self.min_ratio} must be in [0, 1]")


@dataclass
class LinearLRConfig(CosineLRConfig):
    name: str = "linear"


@dataclass
class WSDLRConfig(CosineLRConfig):
    """Warmup–stable–decay: constant, then linear decay over the last decay_fraction of steps."""

    name: str = "wsd"
    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 < self.decay_fraction <= 1.0, "lr_schedule.decay_fraction must be in (0, 1]")


@dataclass
class InvSqrtLRConfig(LRScheduleConfig):
    """η_s = η_max / √(1 + s/timescale)."""

    name: str = "inv_sqrt"
    timescale: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("lr_schedule", "timescale", self.timescale)


@dataclass
class EMAInverseLRConfig(LRScheduleConfig):
    """Seed 002, optimal for constant λ: η_s = η_max / (λ·η_max·s + 1)."""

    name: str = "ema_inverse"
    # λ in the formula; null takes the regularizer's λ (per-step units are converted to λ/η_max).
    lam: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam is not None:
            _positive("lr_schedule", "lam", self.lam)


@dataclass
class EMAInvSqrtLRConfig(EMAInverseLRConfig):
    """Seed 002, optimal when λ_s ∝ η_s: η_s = η_max / √(2·λ_max·η_max·s + 1)."""

    name: str = "ema_inv_sqrt"


LR_SCHEDULES: dict[str, type[LRScheduleConfig]] = {
    "constant": ConstantLRConfig,
    "cosine": CosineLRConfig,
    "linear": LinearLRConfig,
    "wsd": WSDLRConfig,
    "inv_sqrt": InvSqrtLRConfig,
    "ema_inverse": EMAInverseLRConfig,
    "ema_inv_sqrt": EMAInvSqrtLRConfig,
}


@dataclass
class WDScheduleConfig:
    name: str = MISSING


@dataclass
class ConstantWDConfig(WDScheduleConfig):
    name: str = "constant"


@dataclass
class FollowLRWDConfig(WDScheduleConfig):
    """λ_t/λ_max = η_t/η_max."""

    name: str = "follow_lr"


@dataclass
class DynamicWDConfig(WDScheduleConfig):
    """Seed 004: full λ up to transition_steps, then max(min_ratio, decay_factor^progress)."""

    name: str = "dynamic"
    transition_steps: int = 1000
    decay_factor: float = 0.7
    min_ratio: float = 0.1
    progress_cap: float = 2.0
    # If set, transition_steps is stated for a run of this many steps and is rescaled to the
    # actual run length (transition = round(transition_steps · total / reference_total_steps)).
    reference_total_steps: int | None = None

    def __post_init__(self) -> None:
        _positive("wd_schedule", "transition_steps", self.transition_steps)
        _check(0.0 < self.decay_factor <= 1.0, "wd_schedule.decay_factor must be in (0, 1]")
        _check(0.0 <= self.min_ratio <= 1.0, "wd_schedule.min_ratio must be in [0, 1]")
        _positive("wd_schedule", "progress_cap", self.progress_cap)
        if self.reference_total_steps is not None:
            _positive("wd_schedule", "reference_total_steps", self.reference_total_steps)


WD_SCHEDULES: dict[str, type[WDScheduleConfig]] = {
    "constant": ConstantWDConfig,
    "follow_lr": FollowLRWDConfig,
    "dynamic": DynamicWDConfig,
}

# --------------------------------------------------------------------------- model, data


@dataclass
class ModelConfig:
    name: str = "tiny"
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int = 32
    d_ff: int = 512
    rope_theta: float = 1e4
    qk_norm: bool = True
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layers", "n_heads", "head_dim", "d_ff"):
            _positive("model", key, getattr(self, key))
        kv = self.n_kv_heads or self.n_heads
        _check(self.n_heads % kv == 0, f"model.n_heads={self.n_heads} must be a multiple of n_kv_heads={kv}")
        _check(self.head_dim % 2 == 0, "model.head_dim must be even (RoPE rotates pairs)")


@dataclass
class DataConfig:
    name: str = MISSING
    seq_len: int = 64  # model inputs per sequence; each stored block holds seq_len + 1 tokens

    def __post_init__(self) -> None:
        _positive("data", "seq_len", self.seq_len)


@dataclass
class SyntheticDataConfig(DataConfig):
    """A seeded Markov source over a Zipf-like vocabulary; its entropy rate is computed exactly."""

    name: str = "synthetic"
    vocab_size: int = 512
    order: int = 1
    branching: int = 4
    zipf_exponent: float = 1.1
    train_tokens: int = 60_000
    val_tokens: int = 16_384
    source_seed: int = 1234
    # Draw a new train sample of train_tokens from the same source every epoch (epoch 1's is the
    # fixed sample), so E epochs see E·train_tokens distinct tokens instead of one sample E times.
    fresh_each_epoch: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.vocab_size >= 4, "data.vocab_size must be >= 4")
        _check(self.order in (1, 2), f"data.order={self.order} is not valid; choose 1 or 2")
        _check(1 <= self.branching <= self.vocab_size, "data.branching must be in [1, vocab_size]")
        _positive("data", "zipf_exponent", self.zipf_exponent, allow_zero=True)
        _positive("data", "train_tokens", self.train_tokens)
        _positive("data", "val_tokens", self.val_tokens)


TOKENIZERS = ("word", "bpe", "byte")
TEXT_MODES = ("chunk", "line")


@dataclass
class TextDataConfig(DataConfig):
    """Real text: tokenized with a word-level vocabulary or a byte-level BPE trained on the train split."""

    name: str = "text"
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    tokenizer: str = "word"
    vocab_size: int = 40479  # BPE target size; word-level keeps every word seen in train
    min_frequency: int = 1
    mode: str = "chunk"  # chunk: concatenate and cut; line: one line per block, padded
    max_train_tokens: int | None = None
    max_val_tokens: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("data", "tokenizer", self.tokenizer, TOKENIZERS)
        _one_of("data", "mode", self.mode, TEXT_MODES)
        _positive("data", "vocab_size", self.vocab_size)


@dataclass
class WikiText2DataConfig(TextDataConfig):
    name: str = "wikitext2"
    # Directory with wiki.{train,valid,test}.raw or {train,valid,test}.txt; null searches
    # $ADRLAB_DATA_DIR/wikitext-2, <project>/data/wikitext-2 and ../shared/data/wikitext-2.
    root: str | None = None
    train_split: str = "train"
    val_split: str = "valid"
    # Fetch the raw files from the Hugging Face hub when no local copy is found.
    download: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("train_split", "val_split"):
            _one_of("data", key, getattr(self, key), ("train", "valid", "test"))


DATASETS: dict[str, type[DataConfig]] = {
    "synthetic": SyntheticDataConfig,
    "text": TextDataConfig,
    "wikitext2": WikiText2DataConfig,
}

# --------------------------------------------------------------------------- trainer, tracking

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16")
PROGRESS = ("auto", "on", "off")


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 64
    max_steps_per_epoch: int | None = None
    max_eval_batches: int | None = None
    # Also validate every N optimizer steps (val_loss_step / val_ppl_step at the global step),
    # so a run of few epochs still has a validation curve; 0 = only at the end of each epoch.
    eval_every_steps: int = 0
    grad_clip: float = 1.0  # 0 turns clipping off
    log_every: int = 10
    device: str = "auto"
    dtype: str = "float32"  # bfloat16 autocasts the forward pass on CUDA
    threads: int = 0  # torch intra-op threads; 0 = all cores divided by ADRLAB_WORKERS
    # Loss above this ends the run as diverged; null = 3·ln(vocab_size).
    divergence_loss: float | None = None
    checkpoint: bool = True
    # null: <runs_dir>/checkpoints. Many nodes: a folder all of them share (docs/multinode.md).
    checkpoint_dir: str | None = None
    progress: str = "auto"  # auto: bars on a TTY only

    def __post_init__(self) -> None:
        _positive("trainer", "epochs", self.epochs)
        _positive("trainer", "batch_size", self.batch_size)
        _positive("trainer", "eval_batch_size", self.eval_batch_size)
        _positive("trainer", "log_every", self.log_every)
        _positive("trainer", "grad_clip", self.grad_clip, allow_zero=True)
        _positive("trainer", "threads", self.threads, allow_zero=True)
        _positive("trainer", "eval_every_steps", self.eval_every_steps, allow_zero=True)
        if self.max_steps_per_epoch is not None:
            _positive("trainer", "max_steps_per_epoch", self.max_steps_per_epoch)
        if self.max_eval_batches is not None:
            _positive("trainer", "max_eval_batches", self.max_eval_batches)
        _one_of("trainer", "device", self.device, DEVICES)
        _one_of("trainer", "dtype", self.dtype, DTYPES)
        _one_of("trainer", "progress", self.progress, PROGRESS)


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI, else sqlite:///<runs_dir>/mlflow.db
    uri: str | None = None
    experiment: str = "adrlab"
    run_name: str | None = None
    log_steps: bool = True
    # MLflow system metrics (CPU, memory, disk, network, GPU with pynvml) every 10 s under
    # system/*; off by default (needs psutil; on CPU they add a sampling thread to a 2-core box).
    system_metrics: bool = False
    # Reuse a FINISHED run with the same config hash and seed instead of training again.
    reuse: bool = False


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    regularizer: Any = MISSING
    lr_schedule: Any = MISSING
    wd_schedule: Any = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = 42
    scale: str = "smoke"
    # The named variant (ADR arm or preset) this run belongs to; logged as a tag.
    arm: str | None = None
    # false | true (resume the newest unfinished run with this config) | an MLflow run id
    resume: str = "false"
    # Where the embedded MLflow store, checkpoints and study journals live; relative paths
    # are taken from the project root.
    runs_dir: str = "runs"
    tags: dict[str, str] = field(default_factory=dict)


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "optimizer": OPTIMIZERS,
    "regularizer": REGULARIZERS,
    "lr_schedule": LR_SCHEDULES,
    "wd_schedule": WD_SCHEDULES,
    "data": DATASETS,
}


def register_configs() -> None:
    """Register every schema so conf/<group>/<option>.yaml can extend `/schema/<group>/<option>`."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in GROUP_SCHEMAS.items():
        for option, schema in options.items():
            cs.store(group=f"schema/{group}", name=option, node=schema)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/tracking", name="tracking", node=TrackingConfig)


# --------------------------------------------------------------------------- compose


PROJECT_MARKERS = ("adr", "sweeps")


def project_root_and_source() -> tuple[Path, str]:
    """The project folder adrlab reads adr/ and sweeps/ from and writes reports/ and runs/ to,
    and why it is that one: $ADRLAB_ROOT if set, else the nearest folder at or above the
    working directory that holds adr/ or sweeps/ (a checkout of this repository, or a
    researcher's own project), else the working directory. Never the installed package's
    checkout: a second checkout or a git worktree works on its own files."""
    env = os.environ.get("ADRLAB_ROOT")
    if env:
        return Path(env).expanduser().resolve(), "$ADRLAB_ROOT"
    cwd = Path.cwd().resolve()
    for parent in (cwd, *cwd.parents):
        if any((parent / marker).is_dir() for marker in PROJECT_MARKERS):
            return parent, "nearest folder holding adr/ or sweeps/"
    return cwd, "working directory (no adr/ or sweeps/ above it)"


def project_root() -> Path:
    return project_root_and_source()[0]


def reports_root() -> Path:
    """Generated reports (committed); ADRLAB_REPORTS_DIR redirects them (tests, scratch)."""
    env = os.environ.get("ADRLAB_REPORTS_DIR")
    return Path(env).resolve() if env else project_root() / "reports"


def conf_dir() -> Path:
    """The built-in config groups: conf/ of the installed package's checkout, wherever the
    command runs from."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "config.yaml").is_file():
            return parent / "conf"
    raise ConfigError(f"adrlab's built-in configs (conf/config.yaml) are missing above {here.parent}")


def config_groups() -> dict[str, list[str]]:
    """Every config group of conf/ and its options, e.g. {"optimizer": ["adamw", ...]}."""
    root = conf_dir()
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(root.iterdir())
        if d.is_dir() and any(d.glob("*.yaml"))
    }


def check_groups_given_once(overrides: list[str]) -> None:
    """One command (or one ADR arm) choosing a config group twice is a mistake Hydra would
    resolve silently by the last one; refuse it, naming both values."""
    groups = set(config_groups())
    seen: dict[str, str] = {}
    for override in normalize_overrides(list(overrides)):
        key, sep, _ = override.lstrip("+~").partition("=")
        group = key.split("@", 1)[0]
        if not sep or group not in groups:
            continue
        if group in seen:
            raise ConfigError(f"config group {group} given twice: {seen[group]} and {override}; give it once")
        seen[group] = override


def normalize_overrides(overrides: list[str]) -> list[str]:
    """`+experiment=x` is accepted as a synonym of `experiment=x` (the group has a null default)."""
    return [o[1:] if o.startswith("+experiment=") else o for o in overrides]


CONFIG_DIRS_ENV = "ADRLAB_CONFIG_DIRS"


def extra_config_dirs(config_dirs: list[str] | None = None) -> list[Path]:
    """A researcher's own config folders (`--config-dir`), then $ADRLAB_CONFIG_DIRS (os.pathsep
    separated; how sweep workers inherit them). They add options to the groups of conf/."""
    raw = [*(config_dirs or []), *filter(None, os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep))]
    out: list[Path] = []
    for item in raw:
        path = Path(item).expanduser().resolve()
        _check(path.is_dir(), f"--config-dir {item}: no such folder")
        if path not in out:
            out.append(path)
    return out


def searchpath_override(config_dirs: list[str] | None = None) -> list[str]:
    """Hydra's `hydra.searchpath` override for the extra config folders (none: no override)."""
    dirs = extra_config_dirs(config_dirs)
    return [f"hydra.searchpath=[{','.join(repr(f'file://{d}') for d in dirs)}]"] if dirs else []


_COMPOSED: OrderedDict[tuple, DictConfig] = OrderedDict()
_COMPOSED_KEPT = 64  # a sweep worker composes once per trial: keep the recent ones only


def _config_files(dirs: list[Path]) -> str:
    """A digest of every file under the config folders (names and contents; mtimes can repeat
    within a clock tick): a composition is reused only while none of them has changed."""
    digest = hashlib.sha256()
    for path in sorted(p for d in dirs for p in d.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest.update(f"{path}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def compose(overrides: list[str] | None = None, config_dirs: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml (plus the extra config folders) with Hydra's Compose API, then
    validate it. A `_target_` option without a `name` is named after the option chosen.

    The same overrides on unchanged config files give a copy of the earlier result (a report
    composes each arm's config several times; one composition costs ~0.2 s).

    Raises ConfigError (or a Hydra/OmegaConf error, which the CLI turns into exit code 2).
    """
    dirs = [conf_dir(), *extra_config_dirs(config_dirs)]
    key = (tuple(overrides or ()), _config_files(dirs))
    if key not in _COMPOSED:
        _COMPOSED[key] = _compose_uncached(overrides, config_dirs)
        while len(_COMPOSED) > _COMPOSED_KEPT:
            _COMPOSED.popitem(last=False)
    _COMPOSED.move_to_end(key)
    return copy.deepcopy(_COMPOSED[key])


def clear_compose_cache() -> None:
    """Forget earlier compositions (a benchmark that times what a new process pays)."""
    _COMPOSED.clear()


def _compose_uncached(overrides: list[str] | None, config_dirs: list[str] | None) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            overrides=[*searchpath_override(config_dirs), *normalize_overrides(list(overrides or []))],
            return_hydra_config=True,
        )
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
        for group in extensions.TARGET_GROUPS:
            if extensions.is_target(cfg[group]) and "name" not in cfg[group]:
                cfg[group]["name"] = str(choices.get(group) or cfg[group][extensions.TARGET])
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Range checks (dataclass __post_init__) and the optimizer × regularizer × schedule table."""
    for group, options in GROUP_SCHEMAS.items():
        if group in extensions.TARGET_GROUPS and extensions.is_target(
            cfg[group]
        ):  # a researcher's own: checked without importing it
            extensions.validate_node(group, cfg[group])
            if group == "regularizer":
                _one_of("regularizer", "scope", cfg.regularizer.get("scope", "all"), DECAY_SCOPES)
            continue
        name = cfg[group].get("name")
        _check(
            name in options,
            f"{group}.name={name!r} is not a known {group}; choose one of: {', '.join(options)}",
        )
    OmegaConf.to_object(cfg)  # instantiates the dataclasses: runs every __post_init__
    check_compatibility(cfg)


def check_compatibility(cfg: DictConfig) -> None:
    opt, reg = cfg.optimizer.name, cfg.regularizer.name
    if reg == "sqrt_v" and not extensions.is_target(cfg.optimizer):  # a target: checked at build
        _check(
            opt in OPTIMIZERS_WITH_V,
            f"regularizer=sqrt_v penalises λ·√v̂, but optimizer={opt} keeps no second moment v̂; "
            f"use it with optimizer in {{{', '.join(OPTIMIZERS_WITH_V)}}}, or pick regularizer in "
            "{none, l2, decoupled, timescale} for muon",
        )
    if cfg.wd_schedule.name != "constant":
        _check(
            reg != "none",
            f"wd_schedule={cfg.wd_schedule.name} scales λ over time, but regularizer=none has no λ; "
            f"pick regularizer in {{{', '.join(r for r in REGULARIZERS if r != 'none')}}} "
            "or wd_schedule=constant",
        )
    if cfg.lr_schedule.name in ("ema_inverse", "ema_inv_sqrt") and cfg.lr_schedule.get("lam") is None:
        _check(
            reg in ("l2", "decoupled", "timescale") and cfg.regularizer.get("weight_decay", 1.0) > 0,
            f"lr_schedule={cfg.lr_schedule.name} needs λ > 0: set lr_schedule.lam, or use "
            "regularizer in {decoupled, l2, timescale} with weight_decay > 0",
        )
    if cfg.data.name == "synthetic":
        _check(
            cfg.data.seq_len + 1 <= cfg.data.train_tokens,
            "data.train_tokens must hold at least one sequence of seq_len + 1 tokens",
        )


# Options whose off value (0 / false) trains and logs exactly as before they existed.
# Options added later, with the value that trains exactly as before they existed.
NEUTRAL_DEFAULTS: dict[str, Any] = {
    "trainer.eval_every_steps": 0,
    "data.fresh_each_epoch": False,
    "optimizer.ns_schedule": "quintic",
    "optimizer.ns_coefficients": None,
}


def config_hash(cfg: DictConfig) -> str:
    """Identity of a run's training config (seed included; labels, tracking and resume excluded)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for volatile in ("tracking", "resume", "runs_dir", "tags", "arm"):  # labels, not training settings
        container.pop(volatile, None)
    container.get("trainer", {}).pop("progress", None)
    container.get("trainer", {}).pop("threads", None)
    container.get("trainer", {}).pop("checkpoint_dir", None)  # where, not what
    # Options added later are left out at their defaults, so runs stored before them keep their hash.
    for key, default in NEUTRAL_DEFAULTS.items():
        group, name = key.split(".")
        if container.get(group, {}).get(name, default) == default:
            container.get(group, {}).pop(name, None)
    sources = extensions.target_digests(cfg)
    if sources:  # an edited optimizer/regularizer/schedule module is a different run
        container["_target_sources"] = sources
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Dotted keys → values, for MLflow params."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def describe_config_error(exc: BaseException) -> str:
    """Hydra/OmegaConf errors → one message that says what was wrong and what is valid."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

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
        if head.startswith("Ambiguous value"):
            return f"{head}: add -m (--multirun) to run each value, or write a list as key=[a,b]"
        if "Could not override" in head:
            key = head.split("'")[1] if "'" in head else head
            return (
                f"{key} is not a setting of this config group (unknown key); check the spelling or the group"
            )
        return f"{head}: {detail}" if detail else head
    return str(exc).split("\n")[0]


def compose_explained(overrides: list[str], config_dirs: list[str] | None = None) -> DictConfig:
    """compose(), every Hydra/OmegaConf failure raised as a ConfigError that says what was
    wrong and what is valid (for the CLI and for `adrlab adr lint`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(overrides, config_dirs)
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(describe_config_error(exc)) from None


def group_choices(overrides: list[str]) -> dict[str, str | None]:
    """The option each config group ends up with (Hydra's runtime.choices), for `--cfg all`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            overrides=[*searchpath_override(), *normalize_overrides(list(overrides))],
            return_hydra_config=True,
        )
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    assert isinstance(choices, dict)
    return {str(k): v for k, v in choices.items() if not str(k).startswith("hydra/")}
