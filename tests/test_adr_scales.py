"""Every arm of every ADR, at every scale it declares, gets the data that scale stands for.

The trap this guards: an override that silently loses (an `experiment=` preset replaced by the
arm's own preset, or a sweep arm that never sees the scale's overrides) trains on other data
than the scale's, while the ADR's block still describes the scale.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from adrlab.adr.document import Adr, parse_adr, parse_adr_text
from adrlab.adr.report import data_description
from adrlab.adr.runs import all_adr_paths, arm_run_overrides
from adrlab.adr.workspace import adr_config_dirs
from adrlab.config import compose
from tests.conftest import criterion, smoke_adr

ADRS = {path.stem[:4]: parse_adr(path) for path in all_adr_paths()}
ROOT_SWEEPS = all_adr_paths()[0].parent.parent / "sweeps"


def data_mismatches(adr: Adr, scale: str) -> list[str]:
    """What each arm's runs really compose to, against what the scale's own overrides compose to."""
    dirs = adr_config_dirs(adr)  # an ADR's own config folder (e.g. examples/lion) is part of its search path
    expected = compose(list(adr.experiments[scale].overrides), config_dirs=dirs)
    want = (expected.scale, OmegaConf.to_container(expected.data, resolve=True))
    problems = []
    for arm, lists in arm_run_overrides(adr, scale).items():
        for overrides in lists:
            cfg = compose(overrides, config_dirs=dirs)
            got = (cfg.scale, OmegaConf.to_container(cfg.data, resolve=True))
            if got != want:
                problems.append(
                    f"{scale}/{arm}: data.name={cfg.data.name} scale={cfg.scale}, but the scale "
                    f"implies data.name={expected.data.name} scale={expected.scale} ({' '.join(overrides)})"
                )
    return problems


def test_the_adr_folder_declares_experiments() -> None:
    assert len(ADRS) >= 5 and all(adr.experiments for adr in ADRS.values())


@pytest.mark.parametrize("number", sorted(ADRS))
def test_every_arm_gets_the_data_of_its_scale(number: str) -> None:
    adr = ADRS[number]
    problems = [p for scale in adr.experiments for p in data_mismatches(adr, scale)]
    assert not problems, "\n".join(problems)


TRAP = """---
title: "ADR-0099: trap"
status: "Proposed"
experiments:
  smoke_wikitext2:
    seeds: [1]
    overrides: ["scale=smoke_wikitext2"]
    arms:
      direct: ["experiment=rmsuon_wd0"]
      swept: {sweep: rmsuon_wd_lambda}
      swept_here: {sweep: rmsuon_wd_lambda, overrides: ["scale=smoke_wikitext2"]}
---
# ADR-0099
"""


def test_a_sweep_arm_without_the_scale_overrides_is_caught() -> None:
    adr = parse_adr_text(TRAP, "adr/0099-trap.md")
    problems = data_mismatches(adr, "smoke_wikitext2")
    # The sweep's own base says scale=smoke (synthetic); only the arm's overrides can change that.
    assert problems and all(p.startswith("smoke_wikitext2/swept: data.name=synthetic") for p in problems)
    assert len(problems) == len(arm_run_overrides(adr, "smoke_wikitext2")["swept"])


def test_the_block_describes_the_data_each_arm_really_gets() -> None:
    adr = parse_adr_text(TRAP, "adr/0099-trap.md")
    text = data_description(adr, "smoke_wikitext2")
    model = "tiny model (128d × 2 layers), 10 epochs"
    wikitext = "tiny model (128d × 2 layers), 5 epochs"  # the smoke_wikitext2 scale runs 5
    assert text == (
        f"wikitext2 data, {wikitext} (direct, swept_here); synthetic data, {model} (swept), seeds [1]"
    )
    # The repository's ADRs: every arm gets its scale's data, so one description per scale.
    assert (
        data_description(ADRS["0001"], "smoke")
        == f"synthetic data, {model}, seeds {list(ADRS['0001'].experiments['smoke'].seeds)}"
    )


@pytest.mark.parametrize("number", sorted(ADRS))
def test_sweep_arms_run_the_experiments_seeds(number: str) -> None:
    """Paired comparisons need every arm on the same seeds; a sweep arm's come from its spec."""
    from adrlab.adr.lint import lint_file

    adr = ADRS[number]
    unpaired = [str(m) for m in lint_file(adr.path) if "paired by seed" in m.message]
    assert not unpaired, "\n".join(unpaired)


def test_lint_names_a_sweep_arm_on_other_seeds(tmp_path) -> None:
    from adrlab.adr.lint import lint_file

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "adr").mkdir()
    spec = (ROOT_SWEEPS / "rmsuon_wd_lambda.yaml").read_text()
    spec = spec.replace("seeds: [1, 2, 3, 4, 5]", "seeds: [1, 2]")
    (tmp_path / "sweeps" / "rmsuon_wd_lambda.yaml").write_text(spec)
    doc = tmp_path / "adr" / "0099-pairing.md"
    doc.write_text(PAIRING)
    everything = lint_file(doc)
    messages = [m for m in everything if "paired by seed" in m.message]
    assert len(messages) == 1, everything
    assert len(messages) == 1 and messages[0].severity == "warning"
    assert "runs seeds [1, 2] but this experiment's seeds are [1, 2, 3]" in messages[0].message


PAIRING = smoke_adr(
    "ADR-0099: pairing",
    arms={"direct": '["experiment=rmsuon_wd0"]', "swept": "{sweep: rmsuon_wd_lambda}"},
    criteria=[
        criterion("C1", "x", arm="direct", metric="val_ppl", statistic="final", compare="<", threshold=10)
    ],
    body="\n# ADR-0099: pairing\n",
)
