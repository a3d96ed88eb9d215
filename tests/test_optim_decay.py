"""Decay semantics shared by every optimizer: exact shrink factors, untouched grad-None
parameters, and decoupling (the moments never see the decay)."""

from __future__ import annotations

import pytest
import torch

from adrlab.optim import AdamW, AdaRMSuon, Muon, RMSuon, set_step_hyperparams

torch.set_num_threads(1)

OPTIMIZERS = {
    "adamw": lambda groups: AdamW(groups),
    "muon": lambda groups: Muon(groups, adjust_lr="match_rms_adamw"),
    "rmsuon": lambda groups: RMSuon(groups),
    "ada_rmsuon": lambda groups: AdaRMSuon(groups),
    "ada_rmsuon_unnormalized": lambda groups: AdaRMSuon(groups, normalize=False),
}
# Per-step (lr, λ) multipliers, as a schedule would set them.
LR_MULTS = [1.0, 0.8, 0.5, 0.5, 0.25]
WD_MULTS = [1.0, 1.0, 0.6, 0.3, 0.3]


def _params(seed: int = 0) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "matrix": torch.nn.Parameter(torch.randn(12, 20, generator=gen)),
        "vector": torch.nn.Parameter(torch.randn(20, generator=gen)),
        "frozen": torch.nn.Parameter(torch.randn(12, 12, generator=gen)),  # grad stays None
    }


def _groups(params: dict[str, torch.nn.Parameter], name: str, mode: str, lam: float) -> list[dict]:
    structured = name != "adamw"
    return [
        {
            "params": [params["matrix"], params["frozen"]],
            "structured": structured,
            "lr": 0.05,
            "weight_decay": lam,
            "decay_mode": mode,
        },
        {
            "params": [params["vector"]],
            "structured": False,
            "lr": 0.02,
            "weight_decay": lam,
            "decay_mode": mode,
        },
    ]


@pytest.mark.parametrize("mode", ["decoupled", "per_step"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_zero_gradients_shrink_by_the_decay_product(name: str, mode: str) -> None:
    params = _params()
    start = {k: p.detach().clone() for k, p in params.items()}
    opt = OPTIMIZERS[name](_groups(params, name, mode, lam=0.2))
    factors = {"matrix": 1.0, "vector": 1.0}
    for lr_mult, wd_mult in zip(LR_MULTS, WD_MULTS):
        set_step_hyperparams(opt, lr_mult, wd_mult)
        for key in ("matrix", "vector"):
            params[key].grad = torch.zeros_like(params[key])
        opt.step()
        for group, key in zip(opt.param_groups, ("matrix", "vector")):
            lam_t = group["weight_decay"]
            factors[key] *= (1.0 - group["lr"] * lam_t) if mode == "decoupled" else (1.0 - lam_t)
    for key in ("matrix", "vector"):
        torch.testing.assert_close(params[key].detach(), start[key] * factors[key], atol=1e-7, rtol=1e-6)
    assert factors["matrix"] < 0.99  # the decay did act
    assert torch.equal(params["frozen"].detach(), start["frozen"])
    assert params["frozen"] not in opt.state


def test_per_step_units_give_one_minus_lambda_to_the_k() -> None:
    p = torch.nn.Parameter(torch.randn(10, 10))
    start = p.detach().clone()
    opt = RMSuon([p], lr=0.3, weight_decay=0.01, decay_mode="per_step")
    for _ in range(7):
        p.grad = torch.zeros(10, 10)
        opt.step()
    torch.testing.assert_close(p.detach(), start * 0.99**7, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("mode", ["decoupled", "per_step"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_moments_do_not_see_the_decay(name: str, mode: str) -> None:
    """Same gradients, λ = 0 vs λ > 0: every moment buffer is identical (decoupled decay)."""
    runs = []
    for lam in (0.0, 0.3):
        params = _params(seed=1)
        opt = OPTIMIZERS[name](_groups(params, name, mode, lam=lam))
        gen = torch.Generator().manual_seed(2)
        for _ in range(4):
            for key in ("matrix", "vector"):
                params[key].grad = torch.randn(params[key].shape, generator=gen)
            opt.step()
        runs.append((params, opt))
    (p0, o0), (p1, o1) = runs
    for key in ("matrix", "vector"):
        s0, s1 = o0.state[p0[key]], o1.state[p1[key]]
        assert set(s0) == set(s1) and s0
        for buf in s0:
            if isinstance(s0[buf], torch.Tensor):
                assert torch.equal(s0[buf], s1[buf]), (key, buf)
        assert not torch.equal(p0[key], p1[key])  # the decay did act on the weights


def test_l2_goes_through_the_moments() -> None:
    """Coupled l2 is the opposite: λθ enters m and v."""
    states = []
    for lam in (0.0, 0.3):
        p = torch.nn.Parameter(torch.ones(4, 4))
        opt = RMSuon([p], weight_decay=lam, decay_mode="l2")
        p.grad = torch.full((4, 4), 0.1)
        opt.step()
        states.append(opt.state[p]["exp_avg"].clone())
    torch.testing.assert_close(states[1], states[0] + 0.1 * 0.3 * 1.0, atol=1e-7, rtol=0)


def test_scheduled_weight_decay_is_honoured_each_step() -> None:
    """group["weight_decay"] is read at every step, so a schedule that changes it takes effect."""
    p = torch.nn.Parameter(torch.ones(3, 3))
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    for wd_mult, expected in ((1.0, 1 - 0.05), (0.0, 1.0), (2.0, 1 - 0.1)):
        start = p.detach().clone()
        set_step_hyperparams(opt, 1.0, wd_mult)
        p.grad = torch.zeros(3, 3)
        opt.step()
        torch.testing.assert_close(p.detach(), start * expected, atol=1e-7, rtol=0)
