"""The language-model objective and what the training loop measures.

Loss over non-pad targets, validation loss, the data order of an epoch, and the norms the
per-step metrics report. `adrlab.train` and `adrlab bench` both use these, so the bench's
bare loop computes exactly what a run computes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from adrlab.model import Transformer


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int | None) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over non-pad targets, and how many targets counted."""
    ignore = -100 if pad_id is None else pad_id
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=ignore,
        reduction="sum",
    )
    count = targets.numel() if pad_id is None else int((targets != pad_id).sum())
    return total, count


def autocast(cfg: DictConfig, device: torch.device):
    enabled = device.type == "cuda" and cfg.trainer.dtype == "bfloat16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(
    model: Transformer, blocks: torch.Tensor, cfg: DictConfig, pad_id: int | None, device: torch.device
) -> float:
    """Mean val loss per non-pad token (val PPL = exp of it)."""
    model.eval()
    total, count = 0.0, 0
    batch = int(cfg.trainer.eval_batch_size)
    for i, start in enumerate(range(0, blocks.shape[0], batch)):
        if cfg.trainer.max_eval_batches is not None and i >= cfg.trainer.max_eval_batches:
            break
        chunk = blocks[start : start + batch].to(device)
        with autocast(cfg, device):
            logits = model(chunk[:, :-1])
        loss, n = lm_loss(logits, chunk[:, 1:], pad_id)
        total += float(loss)
        count += n
    model.train()
    return total / max(count, 1)


def epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of an epoch depends only on (seed, epoch): resume replays it exactly."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n_blocks, generator=generator)


def matrix_rms(model: Transformer) -> float:
    """Weight RMS of the hidden matrices (the tensors √(η/2λ) is a prediction for)."""
    roles = model.param_roles()
    sq, n = 0.0, 0
    for name, p in model.named_parameters():
        if roles[name] == "matrix":
            sq += float(p.detach().float().pow(2).sum())
            n += p.numel()
    return math.sqrt(sq / max(n, 1))


def grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def applied_decay(mode: str, hyper: dict[str, float]) -> float:
    """The multiplicative shrink θ ← (1 − d)θ the main group received this step (0 if none)."""
    if mode == "per_step":
        return hyper["wd"]
    if mode == "decoupled":
        return hyper["lr"] * hyper["wd"]
    return 0.0


def divergence_bound(cfg: DictConfig, vocab_size: int) -> float:
    if cfg.trainer.divergence_loss is not None:
        return float(cfg.trainer.divergence_loss)
    return 3.0 * math.log(vocab_size)
