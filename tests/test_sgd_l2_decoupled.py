"""ADR-0004's exactness claim: under plain SGD, coupled L2 with λ *is* decoupled decay with η·λ.

θ − η(g + λθ) = (1 − ηλ)θ − ηg for every step, whatever the learning-rate schedule. With momentum
the buffer also accumulates λθ under L2 (and not under decoupled decay), so the two part ways:
that difference is what ADR-0004's arms can measure. The decay goes through adrlab's own
functional cores (`coupled_grad`, `apply_multiplicative_decay_`); SGD itself is torch's.
"""

from __future__ import annotations

import math

import torch

from adrlab.optim.adamw import apply_multiplicative_decay_, coupled_grad

STEPS = 300
LR_MAX, WEIGHT_DECAY = 0.2, 0.05


def lr_at(step: int) -> float:
    """Linear warmup over 20 steps, then cosine to 0: η changes every step."""
    if step < 20:
        return LR_MAX * (step + 1) / 20
    return LR_MAX * 0.5 * (1.0 + math.cos(math.pi * (step - 20) / (STEPS - 20)))


def make_problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    targets = torch.sin(inputs @ torch.randn(8, 1, generator=generator, dtype=torch.float64))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    return model, inputs, targets


def trajectory(mode: str, momentum: float, weight_decay: float = WEIGHT_DECAY) -> list[torch.Tensor]:
    """The flat parameters after every step: mode 'l2' adds λθ to the gradient (torch's SGD sees
    g + λθ), 'decoupled' shrinks θ ← (1 − ηλ)θ and then takes the plain SGD step on g."""
    model, inputs, targets = make_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR_MAX, momentum=momentum)
    out = []
    for step in range(STEPS):
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(inputs), targets).backward()
        for p in model.parameters():
            p.grad = coupled_grad(p.grad, p, weight_decay=weight_decay, mode=mode)
            with torch.no_grad():
                apply_multiplicative_decay_(p, lr=lr, weight_decay=weight_decay, mode=mode)
        optimizer.step()
        out.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
    return out


def max_relative_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).norm() / y.norm()) for x, y in zip(a, b))


def test_plain_sgd_l2_equals_decoupled_decay_step_by_step() -> None:
    l2, decoupled = trajectory("l2", momentum=0.0), trajectory("decoupled", momentum=0.0)
    for step, (x, y) in enumerate(zip(l2, decoupled)):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-14), f"step {step}: {float((x - y).abs().max())}"
    # The decay acted: without it the parameters end elsewhere (the equality is not vacuous).
    undecayed = trajectory("decoupled", momentum=0.0, weight_decay=0.0)
    assert float((undecayed[-1] - l2[-1]).norm() / l2[-1].norm()) > 0.05


def test_coupled_grad_is_torch_sgd_weight_decay() -> None:
    """adrlab's l2 route is the textbook coupled L2 (torch.optim.SGD's own weight_decay)."""
    ours = trajectory("l2", momentum=0.9)
    model, inputs, targets = make_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR_MAX, momentum=0.9, weight_decay=WEIGHT_DECAY)
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()
    final = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(ours[-1], final, rtol=1e-12, atol=1e-14)


def test_with_momentum_l2_and_decoupled_decay_differ() -> None:
    gap = max_relative_gap(trajectory("l2", momentum=0.9), trajectory("decoupled", momentum=0.9))
    assert gap > 1e-2  # a measurable difference, not float rounding
    # ... and it comes from the decay: at λ = 0 the two routes are the same computation.
    same = max_relative_gap(
        trajectory("l2", momentum=0.9, weight_decay=0.0),
        trajectory("decoupled", momentum=0.9, weight_decay=0.0),
    )
    assert same == 0.0
