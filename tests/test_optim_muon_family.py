"""Newton–Schulz, Muon (against torch.optim.Muon), RMSuon and AdaRMSuon update geometry."""

from __future__ import annotations

import math

import pytest
import torch

from adrlab.optim import AdaRMSuon, Muon, RMSuon, muon_lr_ratio, newton_schulz

torch.set_num_threads(1)


def _matrix_with_spectrum(rows: int, cols: int, rel_sigmas: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U·diag(σ)·Vᵀ with σ/‖σ‖ = rel_sigmas/‖rel_sigmas‖ (so σ_min/‖G‖_F is known), times 7."""
    gen = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    U, _ = torch.linalg.qr(torch.randn(rows, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(cols, k, generator=gen, dtype=torch.float64))
    sigma = rel_sigmas.double() / rel_sigmas.double().norm()
    return (7.0 * U @ torch.diag(sigma) @ V.T).float()


# --------------------------------------------------------------------------- Newton–Schulz


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48)])
def test_ns_singular_values_in_band(shape: tuple[int, int]) -> None:
    k = min(shape)
    # ‖σ‖ = 1 by construction: σ_min = 2e-3 (the band's edge), a spread up to 0.1, one large σ.
    rel = torch.cat([torch.tensor([2e-3]), torch.logspace(math.log10(2e-3), -1, k - 2)]).double()
    rel = torch.cat([rel, torch.sqrt(1 - rel.pow(2).sum()).reshape(1)])
    G = _matrix_with_spectrum(*shape, rel)
    sv = torch.linalg.svdvals(G.double())
    assert float(sv.min() / G.double().norm()) == pytest.approx(2e-3, rel=1e-3)
    out = newton_schulz(G, 5)
    assert out.dtype == torch.float32 and out.shape == G.shape
    s = torch.linalg.svdvals(out.double())
    assert s.min() >= 0.68 and s.max() <= 1.21, (float(s.min()), float(s.max()))


def test_ns_is_scale_invariant_and_transpose_equivariant() -> None:
    gen = torch.Generator().manual_seed(1)
    for shape in [(24, 40), (40, 24), (32, 32)]:
        G = torch.randn(shape, generator=gen)
        base = newton_schulz(G)
        for c in (1e-3, 0.5, 30.0):
            torch.testing.assert_close(newton_schulz(c * G), base, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(newton_schulz(G.T), base.T, atol=2e-5, rtol=1e-4)


def test_ns_of_zero_is_zero_and_input_untouched() -> None:
    assert torch.equal(newton_schulz(torch.zeros(5, 7)), torch.zeros(5, 7))
    G = torch.randn(6, 4)
    before = G.clone()
    newton_schulz(G)
    assert torch.equal(G, before)


def test_ns_rejects_non_matrices() -> None:
    for shape in [(5,), (2, 3, 4, 5)]:
        with pytest.raises(ValueError, match=r"matrix \(m, n\) or a stack"):
            newton_schulz(torch.randn(shape))


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_ns_of_a_stack_is_each_matrix_on_its_own(shape) -> None:
    gen = torch.Generator().manual_seed(2)
    # Norms far apart: each matrix must be normalised by its own norm, not the stack's.
    stack = torch.stack([c * torch.randn(shape, generator=gen) for c in (1e-3, 1.0, 50.0)])
    out = newton_schulz(stack)
    assert out.shape == stack.shape
    for G, O in zip(stack, out, strict=True):
        torch.testing.assert_close(O, newton_schulz(G), atol=2e-5, rtol=1e-4)


def test_batched_ns_in_the_step_matches_one_matrix_at_a_time() -> None:
    """Same-shape matrices share a batched NS in the optimizers; the update must not change."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(16, 24), (16, 24), (24, 16), (16, 24), (8, 2, 3)]
    for cls in (Muon, RMSuon, AdaRMSuon):
        together = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        alone = [torch.nn.Parameter(p.detach().clone()) for p in together]
        opt_together = cls(together, lr=0.01, weight_decay=0.1)
        opts_alone = [cls([p], lr=0.01, weight_decay=0.1) for p in alone]
        for _ in range(3):
            grads = [torch.randn(s, generator=gen) for s in shapes]
            for p, q, g in zip(together, alone, grads, strict=True):
                p.grad, q.grad = g.clone(), g.clone()
            opt_together.step()
            for opt in opts_alone:
                opt.step()
        for p, q in zip(together, alone, strict=True):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- Muon


def _muon_pair(shape: tuple[int, int], adjust: str, ns_dtype: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(7)
    init = torch.randn(shape, generator=gen)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = Muon([a], lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr=adjust, ns_dtype=ns_dtype)
    ref = torch.optim.Muon([b], lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr_fn=adjust)
    for _ in range(10):
        g = torch.randn(shape, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    return init, a.detach(), b.detach()


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("shape", [(32, 64), (64, 32)])
def test_muon_equals_torch_muon(shape: tuple[int, int], adjust: str) -> None:
    # torch runs Newton–Schulz in bfloat16 even on CPU; ours in fp32 agrees to ~1e-4 relative.
    init, ours, ref = _muon_pair(shape, adjust, "float32")
    assert float((ours - ref).norm() / ref.norm()) < 1e-3
    assert float((ours - ref).norm() / (ref - init).norm()) < 2e-2  # the update itself, bf16 noise
    # With ns_dtype=bfloat16 the op sequence is torch's, so the result is the same.
    _, ours_bf16, ref = _muon_pair(shape, adjust, "bfloat16")
    torch.testing.assert_close(ours_bf16, ref, atol=1e-6, rtol=1e-6)


def test_muon_lr_ratios() -> None:
    assert muon_lr_ratio("original", (128, 32)) == pytest.approx(2.0)
    assert muon_lr_ratio("original", (32, 128)) == 1.0
    assert muon_lr_ratio("match_rms_adamw", (32, 128)) == pytest.approx(0.2 * math.sqrt(128))
    assert muon_lr_ratio("original", (16, 2, 3, 3)) == 1.0  # (16, 18) as a matrix


def test_muon_conv_weight_is_the_reshaped_matrix() -> None:
    gen = torch.Generator().manual_seed(2)
    init = torch.randn(8, 3, 3, 3, generator=gen)
    conv = torch.nn.Parameter(init.clone())
    flat = torch.nn.Parameter(init.reshape(8, -1).clone())
    o1 = Muon([conv], lr=0.02, weight_decay=0.1, adjust_lr="match_rms_adamw")
    o2 = Muon([flat], lr=0.02, weight_decay=0.1, adjust_lr="match_rms_adamw")
    for _ in range(3):
        g = torch.randn(8, 3, 3, 3, generator=gen)
        conv.grad, flat.grad = g.clone(), g.reshape(8, -1).clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(conv.detach().reshape(8, -1), flat.detach(), atol=1e-7, rtol=0)


def test_muon_leaves_the_gradient_alone() -> None:
    p = torch.nn.Parameter(torch.randn(6, 9))
    g = torch.randn(6, 9)
    p.grad = g.clone()
    opt = Muon([p], weight_decay=0.1, decay_mode="l2")
    opt.step()
    opt.step()
    assert torch.equal(p.grad, g)


def test_muon_refuses_sqrt_v_and_vectors() -> None:
    with pytest.raises(ValueError, match="cannot apply decay_mode='sqrt_v'"):
        Muon([torch.nn.Parameter(torch.randn(4, 4))], decay_mode="sqrt_v")
    with pytest.raises(ValueError, match="structured groups take matrices"):
        Muon([torch.nn.Parameter(torch.randn(4))])
    with pytest.raises(ValueError, match="adjust_lr='wrong'"):
        Muon([torch.nn.Parameter(torch.randn(4, 4))], adjust_lr="wrong")
    # The AdamW side of a Muon optimizer takes vectors (structured=False).
    Muon([{"params": [torch.nn.Parameter(torch.randn(4))], "structured": False}])


# --------------------------------------------------------------------------- RMSuon family


def _energy_from_state(opt: torch.optim.Optimizer, p: torch.Tensor) -> float:
    state = opt.state[p]
    group = opt.param_groups[0]
    beta1, beta2 = group["betas"]
    t = state["step"]
    m_hat = state["exp_avg"] / (1 - beta1**t)
    denom = state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**t) + group["eps"]
    return float((m_hat / denom).norm())


def test_rmsuon_step_one_length_and_direction() -> None:
    gen = torch.Generator().manual_seed(3)
    shape, lr = (32, 48), 1e-2
    init, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    p = torch.nn.Parameter(init.clone())
    p.grad = g.clone()
    RMSuon([p], lr=lr, weight_decay=0.0).step()
    delta = p.detach() - init
    # m̂/(√v̂+ε) = g/(|g|+ε) ≈ ±1 everywhere, so E = √numel.
    assert float(delta.norm()) == pytest.approx(lr * math.sqrt(g.numel()), rel=1e-3)
    direction = newton_schulz(g)
    torch.testing.assert_close(delta / delta.norm(), -direction / direction.norm(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", [RMSuon, AdaRMSuon])
def test_update_length_is_lr_times_energy_every_step(cls: type[RMSuon]) -> None:
    gen = torch.Generator().manual_seed(4)
    p = torch.nn.Parameter(torch.randn(24, 40, generator=gen))
    opt = cls([p], lr=3e-3, weight_decay=0.0)
    opt.collect_stats = True
    for _ in range(6):
        p.grad = torch.randn(24, 40, generator=gen) + 0.5
        before = p.detach().clone()
        opt.step()
        energy = _energy_from_state(opt, p)
        length = float((p.detach() - before).norm())
        assert length == pytest.approx(3e-3 * energy, rel=1e-4)
        assert opt.last_stats["energy_mean"] == pytest.approx(energy, rel=1e-5)
        assert opt.last_stats["update_rms"] == pytest.approx(length / math.sqrt(p.numel()), rel=1e-5)


def test_ada_rmsuon_normalize_false_is_lr_energy_times_ns() -> None:
    """normalize=False (the reference code): update = lr·E·NS(M), not divided by ‖NS(M)‖_F."""
    gen = torch.Generator().manual_seed(5)
    init, g = torch.randn(16, 24, generator=gen), torch.randn(16, 24, generator=gen)
    results = {}
    for normalize in (True, False):
        p = torch.nn.Parameter(init.clone())
        p.grad = g.clone()
        AdaRMSuon([p], lr=1e-2, weight_decay=0.0, normalize=normalize).step()
        results[normalize] = p.detach() - init
    M = g / (g.abs() + 1e-8)  # step 1: m̂/(√v̂+ε)
    E, O = M.norm(), newton_schulz(M)
    torch.testing.assert_close(results[False], -1e-2 * E * O, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(results[True], -1e-2 * E * O / O.norm(), atol=1e-6, rtol=1e-4)
    # ‖O‖_F ≈ √rank for an orthogonalised matrix: the unnormalised step is ~√min(m, n) times longer.
    ratio = float(results[False].norm() / results[True].norm())
    assert 0.6 * math.sqrt(16) < ratio < 1.3 * math.sqrt(16)


def test_rmsuon_sqrt_v_adds_the_penalty() -> None:
    gen = torch.Generator().manual_seed(6)
    init, g = torch.randn(8, 12, generator=gen), torch.randn(8, 12, generator=gen)
    plain, penalised = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    plain.grad, penalised.grad = g.clone(), g.clone()
    RMSuon([plain], lr=1e-2, weight_decay=0.0).step()
    RMSuon([penalised], lr=1e-2, weight_decay=0.3, decay_mode="sqrt_v").step()
    # Step 1: √v̂ = |g|, so the penalty moves θ by −lr·λ·|g| on top of the plain update.
    torch.testing.assert_close(penalised.detach(), plain.detach() - 1e-2 * 0.3 * g.abs(), atol=1e-6, rtol=0)


def test_stats_only_when_asked() -> None:
    p = torch.nn.Parameter(torch.randn(8, 8))
    q = torch.nn.Parameter(torch.randn(8))
    opt = RMSuon([{"params": [p]}, {"params": [q], "structured": False}], lr=1e-2)
    p.grad, q.grad = torch.randn(8, 8), torch.randn(8)
    opt.step()
    assert opt.last_stats == {}
    opt.collect_stats = True
    before = [p.detach().clone(), q.detach().clone()]
    opt.step()
    sq = sum(float((x.detach() - b).pow(2).sum()) for x, b in zip((p, q), before))
    assert opt.last_stats["update_rms"] == pytest.approx(math.sqrt(sq / 72), rel=1e-5)
    assert set(opt.last_stats) == {"update_rms", "energy_mean", "energy_max"}
    assert opt.last_stats["energy_max"] == pytest.approx(opt.last_stats["energy_mean"])


# --------------------------------------------------------------------------- NS coefficient schedules


def _polar_factor(G: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return U @ Vh


def _conditioned(rows: int, cols: int, cond: float, seed: int) -> torch.Tensor:
    """Singular values log-spaced from 1 down to 1/cond."""
    k = min(rows, cols)
    return _matrix_with_spectrum(rows, cols, torch.logspace(0, -math.log10(cond), k), seed)


# Relative Frobenius error ‖NS₅(G) − UVᵀ‖/‖UVᵀ‖ measured (256×128 float32): quintic 0.21 / 0.19 /
# 0.36, Polar Express 0.09 / 0.09 / 0.22 (random, cond 1e2, cond 1e3). Bounds leave ~15% headroom.
ORTHOGONALITY_BOUNDS = {
    "quintic": {"random": 0.24, "cond1e2": 0.22, "cond1e3": 0.41},
    "polar_express": {"random": 0.11, "cond1e2": 0.11, "cond1e3": 0.25},
}


@pytest.mark.parametrize("schedule", ["quintic", "polar_express"])
@pytest.mark.parametrize("shape", [(256, 128), (128, 256)])
def test_ns_schedule_orthogonality_error_against_svd_polar_factor(schedule: str, shape) -> None:
    from adrlab.optim.muon import ns_schedule

    inputs = {
        "random": torch.randn(shape, generator=torch.Generator().manual_seed(0)),
        "cond1e2": _conditioned(*shape, 1e2, seed=1),
        "cond1e3": _conditioned(*shape, 1e3, seed=2),
    }
    for label, G in inputs.items():
        P = _polar_factor(G)
        error = float(
            (newton_schulz(G, 5, coefficients=ns_schedule(schedule)).double() - P).norm() / P.norm()
        )
        assert error <= ORTHOGONALITY_BOUNDS[schedule][label], (schedule, label, error)


def test_polar_express_is_closer_to_the_polar_factor_than_the_quintic() -> None:
    from adrlab.optim.muon import NS_SCHEDULES

    for G in (torch.randn(96, 64, generator=torch.Generator().manual_seed(5)), _conditioned(64, 96, 1e3, 6)):
        P = _polar_factor(G)
        errors = {
            k: float((newton_schulz(G, 5, coefficients=s).double() - P).norm())
            for k, s in NS_SCHEDULES.items()
        }
        assert errors["polar_express"] < 0.7 * errors["quintic"], errors


def test_default_schedule_is_the_classic_quintic_bit_for_bit() -> None:
    from adrlab.optim.muon import NS_COEFFICIENTS, ns_schedule

    G = torch.randn(40, 24, generator=torch.Generator().manual_seed(7))
    assert torch.equal(newton_schulz(G, 5, coefficients=ns_schedule("quintic")), newton_schulz(G, 5))
    assert torch.equal(newton_schulz(G, 5, coefficients=NS_COEFFICIENTS), newton_schulz(G, 5))


def test_explicit_triples_run_one_per_iteration_and_bad_ones_are_refused() -> None:
    from adrlab.optim.muon import POLAR_EXPRESS_COEFFICIENTS, ns_schedule

    G = torch.randn(32, 48, generator=torch.Generator().manual_seed(8))
    # Explicit triples are applied after plain ‖G‖_F normalisation: the same triples as the
    # named schedule on G·1.02 (scale-free input) must agree with it.
    explicit = newton_schulz(G, 5, coefficients=ns_schedule([list(t) for t in POLAR_EXPRESS_COEFFICIENTS]))
    named = newton_schulz(G, 5, coefficients=ns_schedule("polar_express"))
    assert not torch.allclose(explicit, named)  # the 1.02 norm pad matters
    cubic_like = ns_schedule([[1.5, -0.5, 0.0]])  # the classic cubic, repeated
    s = torch.linalg.svdvals(newton_schulz(G, 30, coefficients=cubic_like).double())
    assert float((s - 1).abs().max()) < 1e-3
    with pytest.raises(ValueError, match="triples"):
        ns_schedule([[1.0, 2.0]])
    with pytest.raises(ValueError, match="polar_express"):
        ns_schedule("cubic")


def test_ns_schedule_reaches_the_optimizer_from_the_config() -> None:
    from adrlab.config import compose
    from adrlab.model import Transformer
    from adrlab.optim import build_optimizer, resolve_decay

    cfg = compose(["optimizer=rmsuon", "optimizer.ns_schedule=polar_express"])
    model = Transformer(cfg.model, vocab_size=64)
    optimizer = build_optimizer(model, cfg, resolve_decay(cfg, 10))
    assert {g["ns_schedule"] for g in optimizer.param_groups if g["structured"]} == {"polar_express"}
    cfg = compose(["optimizer=muon", "optimizer.ns_coefficients=[[3.0,-3.2,1.2],[2.0,-1.5,0.5]]"])
    optimizer = build_optimizer(Transformer(cfg.model, vocab_size=64), cfg, resolve_decay(cfg, 10))
    matrix = next(g for g in optimizer.param_groups if g["structured"])
    assert matrix["ns_schedule"] == [[3.0, -3.2, 1.2], [2.0, -1.5, 0.5]]
    with pytest.raises(Exception, match="ns_schedule"):
        compose(["optimizer=muon", "optimizer.ns_schedule=cubic"])


def test_ns_options_at_their_defaults_leave_the_config_hash_unchanged() -> None:
    """Runs stored before the NS options existed keep their hash (run cache, resume)."""
    from omegaconf import OmegaConf

    from adrlab.config import compose, config_hash

    cfg = compose(["optimizer=rmsuon"])
    without = OmegaConf.to_container(cfg, resolve=True)
    del without["optimizer"]["ns_schedule"], without["optimizer"]["ns_coefficients"]
    assert config_hash(cfg) == config_hash(OmegaConf.create(without))
    assert config_hash(compose(["optimizer=rmsuon", "optimizer.ns_schedule=quintic"])) == config_hash(cfg)
    assert config_hash(compose(["optimizer=rmsuon", "optimizer.ns_schedule=polar_express"])) != config_hash(
        cfg
    )
