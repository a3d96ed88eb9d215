"""Our AdamW against torch.optim.AdamW / Adam, its decay modes, and the √(η/2λ) equilibrium."""

from __future__ import annotations

import math

import pytest
import torch

from adrlab.optim import AdamW, adamw_update_

torch.set_num_threads(1)

SHAPES = [(7,), (16, 32), (3, 4, 5)]


def _pair(seed: int = 0) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    return [torch.nn.Parameter(t.clone()) for t in init], [torch.nn.Parameter(t.clone()) for t in init]


def _run_pair(ours: torch.optim.Optimizer, ref: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    a_params = [p for g in ours.param_groups for p in g["params"]]
    b_params = [p for g in ref.param_groups for p in g["params"]]
    for t in range(steps):
        for a, b in zip(a_params, b_params):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        # A changing lr and λ each step, applied to both (the schedule path of the training loop).
        for group in (*ours.param_groups, *ref.param_groups):
            group["lr"] = 1e-2 * (1.0 - 0.03 * t)
            group["weight_decay"] = 0.1 * (1.0 + 0.05 * t)
        ours.step()
        ref.step()


def test_equals_torch_adamw_over_20_steps() -> None:
    a, b = _pair()
    ours = AdamW(a, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    ref = torch.optim.AdamW(b, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    _run_pair(ours, ref, 20)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.state[x]["exp_avg_sq"], ref.state[y]["exp_avg_sq"], atol=1e-7, rtol=0)


def test_coupled_l2_equals_torch_adam() -> None:
    a, b = _pair(3)
    ours = AdamW(a, lr=1e-2, weight_decay=0.1, decay_mode="l2")
    ref = torch.optim.Adam(b, lr=1e-2, weight_decay=0.1)
    _run_pair(ours, ref, 20)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_functional_core_is_the_class_step() -> None:
    p = torch.nn.Parameter(torch.randn(5, 6))
    q = p.detach().clone()
    m, v = torch.zeros_like(q), torch.zeros_like(q)
    opt = AdamW([p], lr=3e-3, weight_decay=0.2)
    for step in range(1, 4):
        g = torch.randn(5, 6)
        p.grad = g.clone()
        opt.step()
        adamw_update_(q, g, m, v, step, lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.2)
    torch.testing.assert_close(p.detach(), q, atol=0, rtol=0)


def test_sqrt_v_step_one_closed_form() -> None:
    """Step 1: m̂ = g, √v̂ = |g|, so θ1 = θ0 − lr·(g/(|g|+ε) + λ|g|), and no multiplicative decay."""
    theta0 = torch.randn(8, 8)
    g = torch.randn(8, 8)
    p = torch.nn.Parameter(theta0.clone())
    p.grad = g.clone()
    lr, lam, eps = 1e-2, 0.5, 1e-8
    AdamW([p], lr=lr, eps=eps, weight_decay=lam, decay_mode="sqrt_v").step()
    expected = theta0 - lr * (g / (g.abs() + eps) + lam * g.abs())
    torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)


def test_per_step_mode_is_independent_of_lr() -> None:
    p = torch.nn.Parameter(torch.randn(4, 4))
    start = p.detach().clone()
    opt = AdamW([p], lr=0.5, weight_decay=0.01, decay_mode="per_step")
    p.grad = torch.zeros(4, 4)
    opt.step()
    torch.testing.assert_close(p.detach(), start * (1 - 0.01), atol=0, rtol=1e-7)


def test_parameter_without_grad_is_untouched() -> None:
    p, q = torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(3))
    q_before = q.detach().clone()
    opt = AdamW([p, q], lr=1e-2, weight_decay=0.5)
    p.grad = torch.randn(3, 3)
    opt.step()
    assert torch.equal(q.detach(), q_before)
    assert q not in opt.state


def test_rejects_unknown_decay_mode_and_structured_groups() -> None:
    p = torch.nn.Parameter(torch.randn(3, 3))
    with pytest.raises(ValueError, match="decay_mode='weird' is not valid"):
        AdamW([p], decay_mode="weird")
    with pytest.raises(ValueError, match="no structured update"):
        AdamW([{"params": [p], "structured": True}])


def test_initial_values_are_recorded() -> None:
    p = torch.nn.Parameter(torch.randn(3, 3))
    opt = AdamW([p], lr=2e-3, weight_decay=0.3)
    group = opt.param_groups[0]
    assert group["initial_lr"] == 2e-3 and group["initial_weight_decay"] == 0.3
    assert group["structured"] is False and group["decay_mode"] == "decoupled"


def test_weight_rms_settles_at_sqrt_eta_over_2_lambda() -> None:
    """iid N(0,1) gradients, η=1e-3, λ=0.1: RMS(θ) → √(η/2λ) = 0.0707 (seed 002).

    From θ0 = 0, RMS² approaches η/2λ as 1 − (1 − ηλ)^(2t); 2/(ηλ) = 20k steps leave a 1% gap.
    A 128×128 tensor keeps the sampling noise well under 1%; the RMS is averaged over the
    last 2k steps.
    """
    eta, lam, n, steps = 1e-3, 0.1, 128, 20_000
    p = torch.nn.Parameter(torch.zeros(n, n))
    opt = AdamW([p], lr=eta, weight_decay=lam)
    gen = torch.Generator().manual_seed(0)
    samples = []
    for s in range(steps):
        p.grad = torch.randn(n, n, generator=gen)
        opt.step()
        if s >= steps - 2000 and s % 100 == 0:
            samples.append(float(p.detach().pow(2).mean()))
    rms = math.sqrt(sum(samples) / len(samples))
    predicted = math.sqrt(eta / (2 * lam))
    assert abs(rms / predicted - 1) < 0.05, (rms, predicted)
