from __future__ import annotations

import torch

from adrlab.config import compose
from adrlab.model import Transformer


def test_shapes_and_tied_head() -> None:
    cfg = compose(["model=tiny"])
    model = Transformer(cfg.model, vocab_size=100)
    idx = torch.randint(0, 100, (3, 17))
    logits = model(idx)
    assert logits.shape == (3, 17, 100)
    assert model.lm_head is None  # tied: the output projection is the embedding matrix
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(names))
    assert sum(1 for n in names if "embed" in n) == 1


def test_untied_head_has_its_own_role() -> None:
    cfg = compose(["model.tie_embeddings=false"])
    model = Transformer(cfg.model, vocab_size=50)
    roles = model.param_roles()
    assert roles["lm_head.weight"] == "head" and roles["embed.weight"] == "embedding"
    assert roles["blocks.0.attn.q_proj.weight"] == "matrix"
    assert roles["blocks.0.attn_norm.weight"] == "vector"
    assert set(roles) == {n for n, _ in model.named_parameters()}


def test_paper_shapes() -> None:
    cfg = compose(["data=wikitext2", "scale=paper"])
    with torch.device("meta"):
        model = Transformer(cfg.model, vocab_size=40479)
    q = model.blocks[0].attn.q_proj.weight
    assert tuple(q.shape) == (768, 512)  # 6 heads × head_dim 128, hidden 512
    assert tuple(model.blocks[0].mlp.up_proj.weight.shape) == (2048, 512)


def test_causal() -> None:
    cfg = compose(["model.d_model=32", "model.n_heads=2", "model.head_dim=16", "model.d_ff=64"])
    model = Transformer(cfg.model, vocab_size=20).eval()
    idx = torch.randint(0, 20, (1, 10))
    changed = idx.clone()
    changed[0, 7] = (idx[0, 7] + 1) % 20
    a, b = model(idx), model(changed)
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert not torch.allclose(a[0, 7:], b[0, 7:], atol=1e-6)
