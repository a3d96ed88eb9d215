"""Per-run cost accounting (adrlab.cost) and what the train loop computes on non-logging steps."""

from __future__ import annotations

import pytest
import torch

from adrlab import tracking
from adrlab.config import compose
from adrlab.cost import CostMeter, cost_params, ns_flops_per_step
from tests.conftest import TINY


class _Square(torch.nn.Module):
    def __init__(self, rows: int, cols: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(rows, cols))
        self.norm = torch.nn.Parameter(torch.zeros(cols))

    def param_roles(self) -> dict[str, str]:
        return {"w": "matrix", "norm": "norm"}


def test_ns_flops_count_each_iteration_on_the_short_side() -> None:
    # m = 512 (short side), n = 2048: per iteration 4·m²·n + 2·m³; 1-D parameters cost nothing.
    assert ns_flops_per_step(_Square(2048, 512), 5) == 5 * (4 * 512**2 * 2048 + 2 * 512**3)
    assert ns_flops_per_step(_Square(512, 2048), 5) == ns_flops_per_step(_Square(2048, 512), 5)
    # A d×d matrix: NS / (its own forward + backward, 6·d² per token) = T·d / tokens per step.
    d, tokens, steps = 512, 8 * 255, 5
    assert ns_flops_per_step(_Square(d, d), steps) / (6 * d * d * tokens) == pytest.approx(steps * d / tokens)


def test_cost_params_are_zero_ns_for_adamw_and_scale_with_ns_steps() -> None:
    from adrlab.model import Transformer

    for name, expect_ns in (("adamw", False), ("rmsuon", True)):
        cfg = compose([*TINY, f"optimizer={name}"])
        params = cost_params(Transformer(cfg.model, vocab_size=64), cfg)
        assert params["model_flops_per_step"] > 0
        assert (params["ns_flops_per_step"] > 0) == expect_ns
    cfg = compose([*TINY, "optimizer=rmsuon", "optimizer.ns_steps=10"])
    ten = cost_params(Transformer(cfg.model, vocab_size=64), cfg)
    assert ten["ns_flops_per_step"] == pytest.approx(2 * params["ns_flops_per_step"])


def test_cost_meter_times_only_steps_it_was_asked_to() -> None:
    meter = CostMeter(torch.device("cpu"))
    for timed in (True, False, True):
        meter.begin_step(timed)
        sum(range(20_000))  # the forward/backward stand-in
        with meter.optimizer_step():
            sum(range(20_000))
    out = meter.epoch_metrics()
    assert meter.timed_steps == 0  # reset for the next epoch
    assert 0.2 < out["optimizer_step_share"] < 0.8 and out["step_time_ms"] > 0 and out["peak_memory_mb"] > 1
    assert set(meter.epoch_metrics()) == {"peak_memory_mb"}  # nothing timed since


@pytest.mark.parametrize("log_steps", [True, False])
def test_statistics_only_on_logging_steps_and_never_without_step_logging(
    runs_dir, monkeypatch, log_steps
) -> None:
    import adrlab.train as train_module

    measured: list[bool] = []
    real_step = train_module.train_step

    def spy(setup, batch, step, measure):
        measured.append(measure)
        return real_step(setup, batch, step, measure)

    monkeypatch.setattr(train_module, "train_step", spy)
    cfg = compose(
        [*TINY, "optimizer=rmsuon", "trainer.grad_clip=0", f"tracking.log_steps={str(log_steps).lower()}"]
    )
    result = train_module.train(cfg)
    every = int(cfg.trainer.log_every)
    expected = [log_steps and (s % every == 0 or s == 1) for s in range(1, len(measured) + 1)]
    assert measured == expected
    uri = tracking.tracking_uri(cfg)
    history = tracking.metric_history(uri, result.run_id, ["grad_norm", "energy_mean", "step_time_ms"])
    assert (not history[history["metric"] == "grad_norm"].empty) == log_steps
    run = tracking.client(uri).get_run(result.run_id)
    assert float(run.data.params["derived.ns_flops_per_step"]) > 0
    assert run.data.metrics["peak_memory_mb"] > 0
    if log_steps:  # the cost timing rides on the logging steps
        assert 0 < run.data.metrics["optimizer_step_share"] < 1
        assert result.epochs[-1]["step_time_ms"] > 0


def test_adr_cost_table_puts_cost_next_to_quality_per_arm() -> None:
    import pandas as pd

    from adrlab.adr.costs import cost_table

    rows = []
    for arm, seconds, share, ratio in (("adamw", 5.0, 0.05, 0.0), ("rmsuon", 6.5, 0.25, 0.5)):
        for seed in (1, 2):
            run = f"{arm}-{seed}"
            for epoch, ppl in ((1, 200.0 + seed), (2, 150.0 + seed), (3, 160.0)):
                rows.append((run, arm, seed, "FINISHED", "epoch", "val_ppl", epoch, ppl))
                rows.append((run, arm, seed, "FINISHED", "epoch", "epoch_time", epoch, seconds + seed))
                rows.append((run, arm, seed, "FINISHED", "epoch", "optimizer_step_share", epoch, share))
                rows.append((run, arm, seed, "FINISHED", "epoch", "peak_memory_mb", epoch, 100.0 * seed))
            rows.append((run, arm, seed, "FINISHED", "param", "derived.ns_flops_ratio", float("nan"), ratio))
    evidence = pd.DataFrame(rows, columns=["run_id", "arm", "seed", "status", "kind", "metric", "x", "value"])
    table = cost_table(evidence)
    # best PPL median of 151, 152; s/epoch median of 6, 7; no step time logged: blank, not 0.
    assert "| adamw | 2 | 151.5 | 6.5 | 5.0% |  | 0.00× | 200 |" in table
    assert "| rmsuon | 2 | 151.5 | 8 | 25.0% |  | 0.50× | 200 |" in table
    assert cost_table(evidence.iloc[:0]) == ""


def test_system_metrics_are_off_by_default_and_refused_clearly_without_psutil(runs_dir) -> None:
    import importlib.util

    from adrlab.train import train

    assert compose(TINY).tracking.system_metrics is False
    if importlib.util.find_spec("psutil") is not None:
        pytest.skip("psutil installed: the refusal path cannot be reached")
    with pytest.raises(RuntimeError, match="psutil"):
        train(compose([*TINY, "optimizer=adamw", "tracking.system_metrics=true"]))
