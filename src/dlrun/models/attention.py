"""Attention scoring written out (book ch. 10): masked softmax, additive (Bahdanau) attention, scaled
dot-product attention and multi-head attention. Each keeps its last weights as `attention_weights`.

Masks are valid lengths, as the book's: `valid_lens` of shape (batch,) lets every query see the first
valid_lens[b] keys; of shape (batch, queries) it sets the count per query (a causal mask is 1, 2, ..., T).
Masked scores become -1e6 (the book's value), so their weights are exactly zero after the softmax.
"""

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

MASKED = -1e6


def masked_softmax(scores: Tensor, valid_lens: Tensor | None) -> Tensor:
    """Softmax over the last axis of scores (batch, queries, keys), keys at or beyond valid_lens masked."""
    if valid_lens is None:
        return F.softmax(scores, dim=-1)
    if valid_lens.dim() == 1:
        valid_lens = valid_lens[:, None].expand(scores.shape[:2])
    keys = torch.arange(scores.shape[-1], device=scores.device)
    mask = keys[None, None, :] < valid_lens[..., None]
    # In float32: -1e6 does not fit in float16 (mixed precision), and the softmax is more accurate there.
    return F.softmax(scores.float().masked_fill(~mask, MASKED), dim=-1).to(scores.dtype)


class AdditiveAttention(nn.Module):
    """score(q, k) = w_v^T tanh(W_q q + W_k k) (book 10.3.2)."""

    def __init__(self, key_size: int, query_size: int, num_hiddens: int, dropout: float = 0.0):
        super().__init__()
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None) -> Tensor:
        """queries (batch, q, query_size), keys (batch, k, key_size), values (batch, k, v) -> (batch, q, v)"""
        features = torch.tanh(self.W_q(queries)[:, :, None, :] + self.W_k(keys)[:, None, :, :])
        scores = self.w_v(features).squeeze(-1)
        weights = masked_softmax(scores, valid_lens)
        self.attention_weights = weights.detach()
        return torch.bmm(self.dropout(weights), values)


class DotProductAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V (book 10.3.3)."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None) -> Tensor:
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(queries.shape[-1])
        weights = masked_softmax(scores, valid_lens)
        self.attention_weights = weights.detach()
        return torch.bmm(self.dropout(weights), values)


class MultiHeadAttention(nn.Module):
    """`num_heads` scaled dot-product attentions on num_hiddens / num_heads wide projections, concatenated
    and projected by W_o (book 10.5). Head h uses features [h*d, (h+1)*d) of each projection, as
    nn.MultiheadAttention does. `attention_weights`: (batch, heads, queries, keys)."""

    def __init__(self, num_hiddens: int, num_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if num_hiddens % num_heads:
            raise ValueError(f"num_hiddens={num_hiddens} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.attention = DotProductAttention(dropout)
        self.W_q = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_k = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_v = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)

    def split_heads(self, x: Tensor) -> Tensor:
        """(batch, n, hiddens) -> (batch * heads, n, hiddens / heads)."""
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3).reshape(b * self.num_heads, n, -1)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None) -> Tensor:
        b, n, _ = queries.shape
        if valid_lens is not None:
            valid_lens = valid_lens.repeat_interleave(self.num_heads, dim=0)
        out = self.attention(
            self.split_heads(self.W_q(queries)),
            self.split_heads(self.W_k(keys)),
            self.split_heads(self.W_v(values)),
            valid_lens,
        )
        out = out.reshape(b, self.num_heads, n, -1).permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.W_o(out)

    @property
    def attention_weights(self) -> Tensor | None:
        weights = self.attention.attention_weights
        if weights is None:
            return None
        return weights.reshape(-1, self.num_heads, *weights.shape[1:])
