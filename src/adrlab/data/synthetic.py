"""The embedded default: a seeded order-k Markov source over a Zipf-like vocabulary.

Sparse transitions make a finite train split overfit like real text, and the entropy rate is known
exactly, so exp(H) is a floor that no model's val PPL can go below.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from omegaconf import DictConfig

from adrlab.data.base import DataError, TokenData, chunk_blocks

# Probability that the next token ignores the context and is drawn from the Zipf popularity. It makes
# the chain irreducible and aperiodic (so the stationary distribution exists and power iteration
# converges), and it is part of the source's definition: entropy_rate() includes it exactly.
RESTART_PROB = 0.05
# Spread of the random transition probabilities over a context's successors (Dirichlet concentration).
DIRICHLET_ALPHA = 1.0


def sub_rng(seed: int, stream: int, epoch: int = 1) -> np.random.Generator:
    """Independent sub-streams of one seed: 0 = the chain's structure, 1 = train sample, 2 = val sample.

    With data.fresh_each_epoch the train sample of epoch e > 1 comes from its own sub-stream (1, e);
    epoch 1 keeps stream 1, so a streaming run's first epoch is the fixed sample.
    """
    key = (stream,) if epoch == 1 else (stream, epoch)
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


@dataclass(frozen=True, eq=False)
class MarkovSource:
    """Order-k Markov chain: P(x | ctx) = (1 - restart)·Q(x | ctx) + restart·popularity(x).

    Q is sparse: each context (the last `order` tokens; index a for order 1, a·V + b for order 2)
    has `branching` distinct successors successors[ctx] with probabilities probs[ctx].
    """

    vocab_size: int
    order: int
    restart: float
    popularity: np.ndarray  # (V,) Zipf-like, every entry > 0
    successors: np.ndarray  # (V**order, branching) int64
    probs: np.ndarray  # (V**order, branching) float64, rows sum to 1

    @property
    def n_contexts(self) -> int:
        return self.vocab_size**self.order

    @cached_property
    def stationary(self) -> np.ndarray:
        return stationary_distribution(self)

    def contexts(self, tokens: np.ndarray) -> np.ndarray:
        """Context index of every position t >= order (the context that predicts tokens[t])."""
        x = np.asarray(tokens, dtype=np.int64)
        if self.order == 1:
            return x[:-1]
        return x[:-2] * self.vocab_size + x[1:-1]

    def log_prob(self, tokens: np.ndarray) -> np.ndarray:
        """log P(tokens[t] | context) for t >= order, in nats."""
        x = np.asarray(tokens, dtype=np.int64)
        ctx, nxt = self.contexts(x), x[self.order :]
        q = (self.probs[ctx] * (self.successors[ctx] == nxt[:, None])).sum(axis=1)
        return np.log((1.0 - self.restart) * q + self.restart * self.popularity[nxt])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A stationary sample of n tokens (the first context is drawn from the stationary distribution)."""
        V, order = self.vocab_size, self.order
        ctx = int(rng.choice(self.n_contexts, p=self.stationary))
        out = ([ctx] if order == 1 else [ctx // V, ctx % V])[:n]
        m = max(n - order, 0)
        # Three uniforms per step, drawn row by row: a shorter sample is a prefix of a longer one.
        draws = rng.random((m, 3))
        restart = (draws[:, 0] < self.restart).tolist()
        base_cum = np.cumsum(self.popularity)
        restart_tok = np.minimum(np.searchsorted(base_cum, draws[:, 1], side="right"), V - 1).tolist()
        u = draws[:, 2].tolist()
        # The chain is inherently sequential: a plain Python loop over lists is the fast way here,
        # with each visited context's CDF converted to lists once.
        rows: dict[int, tuple[list[float], list[int]]] = {}
        for t in range(m):
            if restart[t]:
                tok = restart_tok[t]
            else:
                row = rows.get(ctx)
                if row is None:
                    cum = np.cumsum(self.probs[ctx])
                    cum[-1] = 1.0  # u < 1, so bisect never runs past the last successor
                    row = rows[ctx] = (cum.tolist(), self.successors[ctx].tolist())
                tok = row[1][bisect.bisect_right(row[0], u[t])]
            out.append(tok)
            ctx = tok if order == 1 else (ctx % V) * V + tok
        return np.asarray(out, dtype=np.int64)


def make_source(
    vocab_size: int,
    order: int,
    branching: int,
    zipf_exponent: float,
    seed: int,
    restart: float = RESTART_PROB,
) -> MarkovSource:
    """The random chain of a seed: Zipf popularity, successors drawn by popularity, Dirichlet weights."""
    if order not in (1, 2) or not 1 <= branching <= vocab_size or not 0.0 < restart <= 1.0:
        raise DataError(
            f"synthetic source: order={order}, branching={branching}, restart={restart} with "
            f"vocab_size={vocab_size}; need order in {{1, 2}}, 1 <= branching <= vocab_size, 0 < restart <= 1"
        )
    rng = sub_rng(seed, 0)
    popularity = 1.0 / np.arange(1, vocab_size + 1, dtype=np.float64) ** zipf_exponent
    popularity /= popularity.sum()
    n_ctx = vocab_size**order
    # k distinct successors per context, drawn without replacement with probability ∝ popularity:
    # the k smallest of Exp(1)/popularity (Efraimidis-Spirakis), vectorized over chunks of contexts.
    inv_pop = (1.0 / popularity).astype(np.float32)
    successors = np.empty((n_ctx, branching), dtype=np.int64)
    chunk = max(1, 2**22 // vocab_size)
    for start in range(0, n_ctx, chunk):
        stop = min(n_ctx, start + chunk)
        keys = rng.standard_exponential((stop - start, vocab_size), dtype=np.float32) * inv_pop
        order_ = np.argpartition(keys, branching - 1, axis=1) if branching < vocab_size else keys.argsort(1)
        successors[start:stop] = order_[:, :branching]
    probs = rng.dirichlet(np.full(branching, DIRICHLET_ALPHA), size=n_ctx)
    return MarkovSource(vocab_size, order, restart, popularity, successors, probs)


def source_from_config(cfg: DictConfig) -> MarkovSource:
    return make_source(
        int(cfg.vocab_size),
        int(cfg.order),
        int(cfg.branching),
        float(cfg.zipf_exponent),
        int(cfg.source_seed),
    )


def stationary_distribution(source: MarkovSource, tol: float = 1e-14, max_iter: int = 20_000) -> np.ndarray:
    """Stationary distribution over contexts, by power iteration (the restart makes it converge)."""
    V, k, eps = source.vocab_size, source.successors.shape[1], source.restart
    n_ctx = source.n_contexts
    rows = np.repeat(np.arange(n_ctx), k)
    succ = source.successors.ravel()
    next_ctx = succ if source.order == 1 else (rows % V) * V + succ
    weights = (1.0 - eps) * source.probs.ravel()
    pi = np.full(n_ctx, 1.0 / n_ctx)
    for _ in range(max_iter):
        new = np.bincount(next_ctx, weights=pi[rows] * weights, minlength=n_ctx)
        if source.order == 1:
            new += eps * source.popularity
        else:  # a restart from (a, b) moves to (b, x): mass of last token b times popularity(x)
            new += eps * np.outer(pi.reshape(V, V).sum(axis=0), source.popularity).ravel()
        new /= new.sum()
        delta = np.abs(new - pi).sum()
        pi = new
        if delta < tol:
            return pi
    raise DataError(f"the synthetic chain's stationary distribution did not converge in {max_iter} steps")


def entropy_rate(source: MarkovSource) -> float:
    """Exact entropy rate H = -Σ_ctx π(ctx) Σ_x P(x|ctx) log P(x|ctx), in nats per token.

    P(x|ctx) = (1-ε)Q(x|ctx) + ε·u(x) is dense over the vocabulary; the sum is taken in closed form:
    the restart term over all V tokens, corrected on the `branching` successors where Q adds to it.
    """
    eps, u = source.restart, source.popularity
    eu = eps * u
    restart_h = float(-(eu * np.log(eu)).sum())
    eu_s = eu[source.successors]
    p = (1.0 - eps) * source.probs + eu_s
    per_ctx = restart_h + (-p * np.log(p) + eu_s * np.log(eu_s)).sum(axis=1)
    return float(source.stationary @ per_ctx)


def build_synthetic(cfg: DictConfig) -> TokenData:
    start = time.perf_counter()
    source = source_from_config(cfg)
    h = entropy_rate(source)
    block = int(cfg.seq_len) + 1
    seed = int(cfg.source_seed)
    hint = "raise data.train_tokens / data.val_tokens or lower data.seq_len"

    def train_sample(epoch: int) -> torch.Tensor:
        """A pure function of (data config, epoch): resuming a run redraws the same sample."""
        tokens = source.sample(int(cfg.train_tokens), sub_rng(seed, 1, epoch))
        return chunk_blocks(tokens, block, "train", hint)

    train = train_sample(1)
    val = chunk_blocks(source.sample(int(cfg.val_tokens), sub_rng(seed, 2)), block, "val", hint)
    info: dict[str, int | float | str] = {
        "n_train_tokens": train.shape[0] * (block - 1),
        "n_val_tokens": val.shape[0] * (block - 1),
        "n_train_blocks": train.shape[0],
        "n_val_blocks": val.shape[0],
        "tokenizer": "synthetic",
        "train_sample": "fresh each epoch" if cfg.get("fresh_each_epoch") else "fixed",
        "source": (
            f"markov(order={source.order}, vocab={source.vocab_size}, branching={cfg.branching}, "
            f"zipf={cfg.zipf_exponent}, restart={source.restart}, dirichlet={DIRICHLET_ALPHA}, seed={seed})"
        ),
        "entropy_rate_nats": h,
        "build_seconds": time.perf_counter() - start,
    }
    fresh = train_sample if cfg.get("fresh_each_epoch") else None
    return TokenData(train, val, source.vocab_size, None, float(np.exp(h)), info, fresh)
