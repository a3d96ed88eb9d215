"""What every data source returns, and the error it raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


class DataError(RuntimeError):
    """Data that cannot be built; the message says what was wrong, what is valid and where it looked."""


@dataclass
class TokenData:
    train: torch.Tensor  # int64 (n_train_blocks, seq_len + 1)
    val: torch.Tensor  # int64 (n_val_blocks, seq_len + 1)
    vocab_size: int
    pad_id: int | None  # targets equal to pad_id count neither in the loss nor in PPL; None: no padding
    entropy_floor_ppl: float | None  # exp(entropy rate) of a synthetic source, else None
    # At least n_train_tokens, n_val_tokens (targets that count), n_train_blocks, tokenizer, source.
    info: dict[str, int | float | str] = field(default_factory=dict)
    # Streaming sources: epoch → that epoch's train blocks (same shape as `train`, which is epoch 1's).
    fresh_train: Callable[[int], torch.Tensor] | None = None

    def epoch_train(self, epoch: int) -> torch.Tensor:
        """The train blocks of a 1-based epoch: `train` every epoch, unless the source streams."""
        return self.train if self.fresh_train is None or epoch == 1 else self.fresh_train(epoch)


def token_count(targets: torch.Tensor, pad_id: int | None) -> int:
    """How many targets count in the loss and in PPL (pads do not)."""
    return int(targets.numel()) if pad_id is None else int((targets != pad_id).sum())


def chunk_blocks(stream: np.ndarray, block: int, split: str, hint: str) -> torch.Tensor:
    """Cut a token stream into non-overlapping rows of `block` tokens, dropping the remainder."""
    n = len(stream) // block
    if n == 0:
        raise DataError(
            f"the {split} split has {len(stream)} tokens, fewer than one block of "
            f"data.seq_len + 1 = {block}; {hint}"
        )
    return torch.from_numpy(np.ascontiguousarray(stream[: n * block], dtype=np.int64).reshape(n, block))
