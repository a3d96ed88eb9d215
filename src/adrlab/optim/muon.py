"""Newton–Schulz orthogonalisation and the Muon family: Muon, RMSuon, AdaRMSuon.

Each optimizer applies its structured update to groups with structured=True (hidden
matrices) and AdamW (see adamw.py) to the others. Tensors with more than two dimensions
(conv-shaped) are orthogonalised as (shape[0], −1) matrices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from adrlab.optim.adamw import RoutedOptimizer, apply_multiplicative_decay_, coupled_grad

# Keller Jordan's quintic: maximal slope at 0, so 5 steps push every σ ≥ 2e-3·‖G‖_F into ~[0.68, 1.2].
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel, Persson, Musco & Gower 2025, arXiv:2505.16932): one minimax-optimal odd
# quintic per iteration, numbers as published in modded-nanogpt's train_gpt.py (degree 5, 5
# iterations, l0 = 1e-3, safety factor 2e-2 already folded into the coefficients, which is why the
# input is normalised by ‖G‖_F·(1 + 2e-2) instead of ‖G‖_F).
POLAR_EXPRESS_COEFFICIENTS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
Triple = tuple[float, float, float]


@dataclass(frozen=True)
class NSSchedule:
    """(a, b, c) of X ← aX + (bA + cA²)X for each iteration (the last one repeats when there are
    more iterations than triples), and the factor on ‖G‖_F the input is divided by."""

    coefficients: tuple[Triple, ...]
    norm_pad: float = 1.0

    def triple(self, iteration: int) -> Triple:
        return self.coefficients[min(iteration, len(self.coefficients) - 1)]


NS_SCHEDULES = {
    "quintic": NSSchedule((NS_COEFFICIENTS,)),
    "polar_express": NSSchedule(POLAR_EXPRESS_COEFFICIENTS, norm_pad=1.02),
}


def ns_schedule(name: str | Sequence[Sequence[float]]) -> NSSchedule:
    """A named schedule, or explicit (a, b, c) triples, one per iteration (applied after plain
    ‖G‖_F normalisation)."""
    if not isinstance(name, str):
        triples = tuple(tuple(float(x) for x in t) for t in name)
        if not triples or any(len(t) != 3 for t in triples):
            raise ValueError(
                f"ns_schedule must name a schedule or list (a, b, c) triples, got {list(name)!r}"
            )
        return NSSchedule(triples)  # type: ignore[arg-type]
    if name not in NS_SCHEDULES:
        raise ValueError(f"ns_schedule={name!r} is not known; choose one of: {', '.join(NS_SCHEDULES)}")
    return NS_SCHEDULES[name]


NS_EPS = 1e-7
NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MUON_ADJUST_LR = ("original", "match_rms_adamw", "none")


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    *,
    coefficients: Triple | NSSchedule = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Approximately U·Vᵀ for G = U·S·Vᵀ, computed in `dtype`, returned in `dtype`.

    G is one matrix (m, n) or a stack of same-shape matrices (b, m, n), each orthogonalised on
    its own: a stack turns many small matmuls into a few batched ones.
    Frobenius normalisation first (so σ_max ≤ 1); the Gram matrix is taken on the short side.
    For one matrix the op sequence mirrors torch.optim.Muon's, so dtype=bfloat16 reproduces it
    exactly. `coefficients`: one (a, b, c) for every iteration, or an NSSchedule.
    """
    if G.ndim not in (2, 3):
        raise ValueError(
            f"newton_schulz needs a matrix (m, n) or a stack of them (b, m, n), got shape {tuple(G.shape)}"
        )
    schedule = coefficients if isinstance(coefficients, NSSchedule) else NSSchedule((coefficients,))
    X = G.to(dtype)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    pad = schedule.norm_pad
    if X.ndim == 2:
        norm = X.norm() if pad == 1.0 else X.norm() * pad  # quintic: torch.optim.Muon's exact ops
        X = X / norm.clamp(min=eps)  # not in place: G.to() may have returned G itself
        multiply_add = torch.addmm
    else:
        X = X / (torch.linalg.matrix_norm(X, keepdim=True) * pad).clamp(min=eps)
        multiply_add = torch.baddbmm
    for i in range(steps):
        a, b, c = schedule.triple(i)
        A = X @ X.mT
        B = multiply_add(A, A, A, beta=b, alpha=c)
        X = multiply_add(X, B, X, beta=a)
    return X.mT if transposed else X


def as_matrix(t: Tensor) -> Tensor:
    """The 2-D view a structured update works on: (rows, cols) for 2-D, (out, −1) above."""
    return t if t.ndim == 2 else t.reshape(t.shape[0], -1)


def muon_lr_ratio(adjust_lr: str, shape: torch.Size | tuple[int, ...]) -> float:
    """Muon's per-matrix lr factor, as torch.optim.Muon (rows, cols of the 2-D view)."""
    rows, cols = shape[0], math.prod(shape[1:])
    if adjust_lr == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


class _StructuredBase(RoutedOptimizer):
    """Shared checks for optimizers whose structured groups hold matrices."""

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        if group["structured"]:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(
                        f"{type(self).__name__}: structured groups take matrices (≥ 2-D), "
                        f"got a parameter of shape {tuple(p.shape)}; route it to an AdamW group"
                    )
            if group.get("ns_dtype", "float32") not in NS_DTYPES:
                raise ValueError(f"ns_dtype must be one of {', '.join(NS_DTYPES)}")
            ns_schedule(group.get("ns_schedule", "quintic"))

    def _orthogonalise(self, group: dict[str, Any], tensors: list[Tensor]) -> list[Tensor]:
        """NS of each tensor's matrix view, shaped like the tensor. Matrices of one shape (up to
        transposition: NS(Mᵀ) = NS(M)ᵀ) go through one batched NS: a model repeats few shapes,
        and on CPU a loop of small matmuls costs more than their arithmetic."""
        steps, dtype = group["ns_steps"], NS_DTYPES[group.get("ns_dtype", "float32")]
        schedule = ns_schedule(group.get("ns_schedule", "quintic"))
        wide = [as_matrix(t) for t in tensors]
        tall = [M.size(0) > M.size(1) for M in wide]
        wide = [M.mT if is_tall else M for M, is_tall in zip(wide, tall, strict=True)]
        by_shape: dict[tuple[Any, ...], list[int]] = {}
        for i, M in enumerate(wide):
            by_shape.setdefault((M.shape, M.device, M.dtype), []).append(i)
        out: list[Tensor] = list(tensors)
        for indices in by_shape.values():
            if len(indices) == 1:
                results = [newton_schulz(wide[indices[0]], steps, coefficients=schedule, dtype=dtype)]
            else:
                results = newton_schulz(
                    torch.stack([wide[i] for i in indices]), steps, coefficients=schedule, dtype=dtype
                )
            for i, O in zip(indices, results, strict=True):
                out[i] = (O.mT if tall[i] else O).reshape(tensors[i].shape)
        return out


class Muon(_StructuredBase):
    """Muon on structured groups, as torch.optim.Muon does it (EMA momentum buffer, Nesterov as
    g.lerp(buf, μ), decay with the unadjusted lr, update scaled by `adjust_lr`).

    Muon keeps no second moment, so decay_mode="sqrt_v" is refused for its structured groups.
    """

    structured_decay_modes = ("none", "l2", "decoupled", "per_step")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        adjust_lr: str = "original",
        ns_steps: int = 5,
        ns_dtype: str = "float32",
        ns_schedule: str | Sequence[Sequence[float]] = "quintic",
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        decay_mode: str = "decoupled",
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "adjust_lr": adjust_lr,
            "ns_steps": ns_steps,
            "ns_dtype": ns_dtype,
            "ns_schedule": ns_schedule,
            "betas": tuple(betas),  # only used by the AdamW groups
            "eps": eps,
            "decay_mode": decay_mode,
            "structured": True,
            "role": "matrix",
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        if group["adjust_lr"] not in MUON_ADJUST_LR:
            raise ValueError(
                f"adjust_lr={group['adjust_lr']!r} is not valid; choose one of: {', '.join(MUON_ADJUST_LR)}"
            )

    def _structured_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, wd, mode = group["lr"], group["weight_decay"], group["decay_mode"]
        momentum = group["momentum"]
        directions = []
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grad = coupled_grad(p.grad, p, weight_decay=wd, mode=mode)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1.0 - momentum)
            directions.append(grad.lerp(buf, momentum) if group["nesterov"] else buf)
        for p, O in zip(params, self._orthogonalise(group, directions), strict=True):
            apply_multiplicative_decay_(p, lr=lr, weight_decay=wd, mode=mode)
            p.add_(O.to(p.dtype), alpha=-lr * muon_lr_ratio(group["adjust_lr"], p.shape))


class RMSuon(_StructuredBase):
    """Energy-scaled orthogonal update on structured groups.

    m, v: Adam moments with bias correction; E = ‖m̂/(√v̂+ε)‖_F (what AdamW's step would
    measure); O = NS(m̂); update = lr·(E/‖O‖_F)·O, so ‖update‖_F = lr·E: Muon's direction
    with AdamW's step length.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: str = "float32",
        ns_schedule: str | Sequence[Sequence[float]] = "quintic",
        decay_mode: str = "decoupled",
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "ns_steps": ns_steps,
            "ns_dtype": ns_dtype,
            "ns_schedule": ns_schedule,
            "decay_mode": decay_mode,
            "structured": True,
            "role": "matrix",
        }
        super().__init__(params, defaults)

    def _moments(self, group: dict[str, Any], p: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Update m, v; return (m̂, √v̂ + ε, √v̂ if decay_mode is sqrt_v else None) for this step.
        Fresh tensors each, made with as few full-size passes as the arithmetic allows (on CPU
        an RMSuon step is mostly such passes over small matrices)."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"]
        grad = coupled_grad(p.grad, p, weight_decay=group["weight_decay"], mode=group["decay_mode"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        m_hat = m / (1.0 - beta1**step)
        sqrt_v_hat = v.sqrt().div_(math.sqrt(1.0 - beta2**step))
        if group["decay_mode"] == "sqrt_v":
            return m_hat, sqrt_v_hat + group["eps"], sqrt_v_hat
        return m_hat, sqrt_v_hat.add_(group["eps"]), None

    def _apply(self, group: dict[str, Any], p: Tensor, update: Tensor, sqrt_v_hat: Tensor | None) -> None:
        """θ ← decay(θ) − lr·update (− lr·λ·√v̂ for sqrt_v)."""
        lr, wd, mode = group["lr"], group["weight_decay"], group["decay_mode"]
        apply_multiplicative_decay_(p, lr=lr, weight_decay=wd, mode=mode)
        p.add_(update.reshape(p.shape).to(p.dtype), alpha=-lr)
        if mode == "sqrt_v" and wd != 0.0:
            p.add_(sqrt_v_hat, alpha=-lr * wd)

    def _energy_scaled_step(self, group: dict[str, Any], params: list[Tensor], whiten: bool) -> None:
        """E = ‖m̂/(√v̂+ε)‖_F; O = NS(m̂/(√v̂+ε)) if whiten else NS(m̂); update = E·O/‖O‖_F
        (or E·O when group["normalize"] is False). The NS inputs of all matrices are held at
        once (one extra copy of the matrices) so that same-shape ones share a batched NS."""
        inputs, energies, sqrt_v_hats = [], [], []
        for p in params:
            m_hat, denom, sqrt_v_hat = self._moments(group, p)
            whitened = torch.div(m_hat, denom, out=denom)  # the denominator is not used again
            energies.append(torch.linalg.vector_norm(whitened))
            inputs.append(whitened if whiten else m_hat)
            sqrt_v_hats.append(sqrt_v_hat)
        for p, energy, sqrt_v_hat, O in zip(
            params, energies, sqrt_v_hats, self._orthogonalise(group, inputs), strict=True
        ):
            O = O.float()
            if group.get("normalize", True):
                # Zero momentum gives O = 0 and E = 0: the clamp keeps 0/0 from becoming NaN.
                scale = energy / torch.linalg.vector_norm(O).clamp(min=torch.finfo(torch.float32).tiny)
            else:
                scale = energy
            self._apply(group, p, O.mul_(scale), sqrt_v_hat)  # O is this step's own tensor
            if self.collect_stats:
                self._energies.append(energy.detach())

    def _structured_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        self._energy_scaled_step(group, params, whiten=False)


class AdaRMSuon(RMSuon):
    """Pre-whitened RMSuon: M = m̂/(√v̂+ε), E = ‖M‖_F, O = NS(M).

    normalize=True:  update = lr·E·O/‖O‖_F  (the method as described; ‖update‖_F = lr·E)
    normalize=False: update = lr·E·O        (what the reference research code ran)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: str = "float32",
        ns_schedule: str | Sequence[Sequence[float]] = "quintic",
        decay_mode: str = "decoupled",
        normalize: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "ns_steps": ns_steps,
            "ns_dtype": ns_dtype,
            "ns_schedule": ns_schedule,
            "decay_mode": decay_mode,
            "normalize": normalize,
            "structured": True,
            "role": "matrix",
        }
        _StructuredBase.__init__(self, params, defaults)

    def _structured_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        self._energy_scaled_step(group, params, whiten=True)
