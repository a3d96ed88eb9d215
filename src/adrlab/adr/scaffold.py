"""`adrlab adr new "title"`: a new ADR in the seeds' form, ready for `adrlab adr lint`.

The file gets the next free number in the folder, YAML front matter with `experiments` at the
smoke scale (5 paired seeds, an arm and a control arm) and one example criterion, and the
seeds' bilingual section headings. It is written once and never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import subprocess
import unicodedata
from pathlib import Path

from adrlab.adr.document import AdrError, parse_adr_text
from adrlab.config import compose

DEFAULT_ARM = "optimizer=rmsuon regularizer=decoupled"
DEFAULT_CONTROL = "optimizer=adamw regularizer=decoupled"
SEEDS = (1, 2, 3, 4, 5)


def next_number(folder: Path) -> int:
    """One more than the highest NNNN- file number in the folder (1 for an empty one)."""
    numbers = [int(m.group(1)) for p in folder.glob("*.md") if (m := re.match(r"^(\d{4})-", p.name))]
    return max(numbers, default=0) + 1


def slugify(title: str) -> str:
    """ASCII words of the title, lower case, joined by '-' (Chinese-only titles give 'adr')."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return "-".join(words)[:60].strip("-") or "adr"


def git_author() -> str:
    try:
        out = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _yaml_list(overrides: str) -> str:
    return json.dumps(shlex.split(overrides), ensure_ascii=False)


def front_matter(
    number: int, title: str, arm: str, control: str, extra: dict[str, object], today: str
) -> str:
    lines = [
        "---",
        f"title: {json.dumps(f'ADR-{number:04d}: {title}', ensure_ascii=False)}",
        'status: "Proposed"',
        f'date: "{today}"',
        f"authors: {json.dumps(git_author(), ensure_ascii=False)}",
        "tags: []",
        'supersedes: ""',
        'superseded_by: ""',
        *[f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in extra.items()],
        "experiments:",
        "  smoke:                 # CPU scale: `adrlab adr run` trains the missing arm × seed runs",
        f"    seeds: {list(SEEDS)}    # paired: a seed gives every arm the same init and data order",
        '    overrides: ["scale=smoke"]',
        "    arms:",
        f"      candidate: {_yaml_list(arm)}   # your idea: fill in its overrides",
        f"      control: {_yaml_list(control)}     # what it must beat",
        "criteria:",
        "  - id: PRIMARY",
        '    claim: "主要标准: candidate 的最终验证 PPL 比 control 低至少 2%"',
        "    role: primary",
        "    arm: candidate",
        "    baseline: control",
        "    relation: ratio",
        "    metric: val_ppl",
        "    statistic: final",
        '    compare: "<"',
        "    threshold: 0.98",
        "---",
    ]
    return "\n".join(lines) + "\n"


BODY = """
# ADR-{number:04d}: {title}

## 状态 (Status)

**Proposed** | Accepted | Rejected | Superseded | Deprecated

## 背景 (Context)

（写下问题与动机：现有做法哪里不够，证据是什么。）

## 决策 (Decision)

（写下要采用的做法：优化器、正则化或调度，以及它与对照的唯一区别。）

## 实验计划与预期观察 (The Experiment)

`candidate` 与 `control` 两个臂在 smoke 规模上各跑 {n_seeds} 个配对种子
（同一种子意味着同样的初始化和数据顺序）。
主要标准 PRIMARY：`candidate` 的最终验证 PPL 与 `control` 之比小于 0.98。

## 后果 (Consequences)

### 积极 (Positive)

（若主要标准通过，会带来什么。）

### 消极 (Negative)

（代价、风险与尚未检验的部分。）

## 参考文献 (References)

（论文、代码、先前的 ADR。）
"""


def new_adr(
    title: str,
    folder: Path,
    *,
    arm: str = DEFAULT_ARM,
    control: str = DEFAULT_CONTROL,
    extra: dict[str, object] | None = None,
    today: str | None = None,
) -> Path:
    """Write folder/NNNN-slug.md and return its path; the text is validated before writing."""
    if not title.strip():
        raise AdrError(folder, None, "the title is empty; say what the decision is about")
    folder.mkdir(parents=True, exist_ok=True)
    number = next_number(folder)
    path = folder / f"{number:04d}-{slugify(title)}.md"
    today = today or _dt.date.today().isoformat()
    text = front_matter(number, title.strip(), arm, control, extra or {}, today)
    text += BODY.format(number=number, title=title.strip(), n_seeds=len(SEEDS))
    adr = parse_adr_text(text, path)  # never write a file lint would reject ...
    dirs = [str(folder.parent / d) for d in adr.config_dirs]
    for name in adr.experiments["smoke"].arms:  # ... nor arms that do not compose
        try:
            compose(adr.experiments["smoke"].arm_overrides(name), config_dirs=dirs)
        except Exception as exc:  # Hydra, OmegaConf and ConfigError alike: say which arm
            message = str(exc).split("\n")[0]
            raise AdrError(path, None, f"arm {name} does not compose: {message}") from exc
    with path.open("x", encoding="utf-8") as handle:  # "x": a race for the number never overwrites
        handle.write(text)
    return path
