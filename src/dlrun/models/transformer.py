"""The book's Transformer encoder-decoder (10.7): written from its parts (`impl="scratch"`), or the same
network through nn.Transformer (`impl="torch"`); with the same weights (`copy_scratch_weights`) both
compute the same outputs.

Parts: embeddings scaled by sqrt(hidden) plus sinusoidal positional encoding (dropout after), blocks of
multi-head attention (no projection biases, as the book's `use_bias=False`) and a position-wise FFN, each
followed by a post-norm AddNorm (LayerNorm(x + dropout(sublayer(x)))). Encoder self-attention masks the
source padding; decoder self-attention is causal; encoder-decoder attention masks the source padding.

nn.Transformer is adapted to be that network: its attentions are built without biases, the dropout inside
its FFN (the book has none) is removed, and so are the final LayerNorms it puts after each stack (the
book has none: every block already ends with one). nn.Transformer's layers call attention with
need_weights=False, so `impl="torch"` keeps no attention weights (no heatmaps).

Decoding step by step runs the decoder on the whole prefix so far (kept in the state): the same causal
computation as training, with every position encoded where it is (the v2 book's cached decoding encoded
each new token as position 0).
"""

import math

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError
from dlrun.models.attention import MultiHeadAttention
from dlrun.models.seq2seq import EncoderDecoder, State, check_sizes, init_weights

IMPLS = ("scratch", "torch")


class PositionalEncoding(nn.Module):
    """P[i, 2j] = sin(i / 10000^(2j/d)), P[i, 2j+1] = cos(i / 10000^(2j/d)), added, then dropout."""

    def __init__(self, hidden_size: int, dropout: float, max_len: int = 1000):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] / torch.pow(
            10000, torch.arange(0, hidden_size, 2, dtype=torch.float32) / hidden_size
        )
        table = torch.zeros(max_len, hidden_size)
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, : hidden_size // 2])
        self.register_buffer("P", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > len(self.P):
            raise DlrunError(f"{x.shape[1]} positions but model.max_len={len(self.P)}; raise model.max_len")
        return self.dropout(x + self.P[: x.shape[1]].to(x.dtype))


class PositionWiseFFN(nn.Module):
    def __init__(self, hidden_size: int, ffn_hidden_size: int):
        super().__init__()
        self.dense1 = nn.Linear(hidden_size, ffn_hidden_size)
        self.relu = nn.ReLU()
        self.dense2 = nn.Linear(ffn_hidden_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense2(self.relu(self.dense1(x)))


class AddNorm(nn.Module):
    def __init__(self, hidden_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(hidden_size)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.ln(self.dropout(y) + x)


class EncoderBlock(nn.Module):
    def __init__(self, hidden_size: int, ffn_hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.addnorm1 = AddNorm(hidden_size, dropout)
        self.ffn = PositionWiseFFN(hidden_size, ffn_hidden_size)
        self.addnorm2 = AddNorm(hidden_size, dropout)

    def forward(self, x: Tensor, valid_lens: Tensor) -> Tensor:
        y = self.addnorm1(x, self.attention(x, x, x, valid_lens))
        return self.addnorm2(y, self.ffn(y))


class DecoderBlock(nn.Module):
    def __init__(self, hidden_size: int, ffn_hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention1 = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.addnorm1 = AddNorm(hidden_size, dropout)
        self.attention2 = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.addnorm2 = AddNorm(hidden_size, dropout)
        self.ffn = PositionWiseFFN(hidden_size, ffn_hidden_size)
        self.addnorm3 = AddNorm(hidden_size, dropout)

    def forward(self, x: Tensor, memory: Tensor, src_len: Tensor, causal_lens: Tensor) -> Tensor:
        y = self.addnorm1(x, self.attention1(x, x, x, causal_lens))
        z = self.addnorm2(y, self.attention2(y, memory, memory, src_len))
        return self.addnorm3(z, self.ffn(z))


def torch_transformer(
    hidden_size: int, ffn_hidden_size: int, num_heads: int, num_layers: int, dropout: float
):
    """nn.Transformer made the book's network (see the module docstring)."""

    def attention() -> nn.MultiheadAttention:
        return nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, bias=False, batch_first=True)

    enc = nn.TransformerEncoderLayer(hidden_size, num_heads, ffn_hidden_size, dropout, batch_first=True)
    enc.self_attn, enc.dropout = attention(), nn.Identity()
    dec = nn.TransformerDecoderLayer(hidden_size, num_heads, ffn_hidden_size, dropout, batch_first=True)
    dec.self_attn, dec.multihead_attn, dec.dropout = attention(), attention(), nn.Identity()
    return nn.Transformer(
        hidden_size,
        num_heads,
        custom_encoder=nn.TransformerEncoder(enc, num_layers, norm=None, enable_nested_tensor=False),
        custom_decoder=nn.TransformerDecoder(dec, num_layers, norm=None),
        batch_first=True,
    )


class Transformer(EncoderDecoder):
    """state = (encoder outputs (batch, S, hidden), source valid lengths (batch,), target prefix (batch, t)).
    `attention_weights` (scratch): encoder, decoder_self, decoder_cross, one tensor per layer."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        hidden_size: int = 32,
        ffn_hidden_size: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        dropout: float = 0.1,
        impl: str = "scratch",
        max_len: int = 1000,
        init: str = "xavier",
    ):
        super().__init__()
        if impl not in IMPLS:
            raise DlrunError(f"model.impl={impl!r}; use scratch or torch")
        check_sizes(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            hidden_size=hidden_size,
            ffn_hidden_size=ffn_hidden_size,
            num_heads=num_heads,
            num_layers=num_layers,
            max_len=max_len,
        )
        if hidden_size % num_heads or hidden_size % 2:
            raise DlrunError(
                f"model.hidden_size={hidden_size} must be even and divisible by model.num_heads={num_heads}"
            )
        self.impl, self.hidden_size = impl, hidden_size
        self.src_embedding = nn.Embedding(src_vocab_size, hidden_size)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, hidden_size)
        self.pos_encoding = PositionalEncoding(hidden_size, dropout, max_len)
        if impl == "scratch":
            sizes = (hidden_size, ffn_hidden_size, num_heads, dropout)
            self.encoder_blocks = nn.ModuleList(EncoderBlock(*sizes) for _ in range(num_layers))
            self.decoder_blocks = nn.ModuleList(DecoderBlock(*sizes) for _ in range(num_layers))
        else:
            self.transformer = torch_transformer(hidden_size, ffn_hidden_size, num_heads, num_layers, dropout)
        self.dense = nn.Linear(hidden_size, tgt_vocab_size)
        init_weights(self, init)

    def embed(self, embedding: nn.Embedding, tokens: Tensor) -> Tensor:
        return self.pos_encoding(embedding(tokens) * math.sqrt(self.hidden_size))

    def encode(self, src: Tensor, src_len: Tensor) -> State:
        x = self.embed(self.src_embedding, src)
        if self.impl == "scratch":
            for block in self.encoder_blocks:
                x = block(x, src_len)
            self.attention_weights = {"encoder": [b.attention.attention_weights for b in self.encoder_blocks]}
        else:
            x = self.transformer.encoder(x, src_key_padding_mask=padding_mask(src, src_len))
        return x, src_len, src.new_zeros(src.shape[0], 0)

    def decode(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        memory, src_len, prefix = state
        prefix = torch.cat([prefix, tokens], dim=1)
        batch, steps = prefix.shape
        y = self.embed(self.tgt_embedding, prefix)
        if self.impl == "scratch":
            causal_lens = torch.arange(1, steps + 1, device=y.device).expand(batch, steps)
            for block in self.decoder_blocks:
                y = block(y, memory, src_len, causal_lens)
            self.attention_weights = (self.attention_weights or {}) | {
                "decoder_self": [b.attention1.attention_weights for b in self.decoder_blocks],
                "decoder_cross": [b.attention2.attention_weights for b in self.decoder_blocks],
            }
        else:
            causal = torch.ones(steps, steps, dtype=torch.bool, device=y.device).triu(1)
            y = self.transformer.decoder(
                y, memory, tgt_mask=causal, memory_key_padding_mask=padding_mask(memory, src_len)
            )
        return self.dense(y[:, steps - tokens.shape[1] :]), (memory, src_len, prefix)


def padding_mask(x: Tensor, valid_len: Tensor) -> Tensor:
    """True where a position of x (batch, S, ...) is at or beyond its valid length (nn.Transformer's form)."""
    return torch.arange(x.shape[1], device=x.device)[None, :] >= valid_len[:, None]


@torch.no_grad()
def copy_scratch_weights(dst: Transformer, src: Transformer) -> None:
    """Give an `impl="torch"` model the weights of an `impl="scratch"` one of the same sizes."""
    if src.impl != "scratch" or dst.impl != "torch":
        raise ValueError("copy_scratch_weights(torch_model, scratch_model)")
    for name in ("src_embedding", "tgt_embedding", "dense"):
        getattr(dst, name).load_state_dict(getattr(src, name).state_dict())

    def attention(mha: nn.MultiheadAttention, mine: MultiHeadAttention) -> None:
        mha.in_proj_weight.copy_(torch.cat([mine.W_q.weight, mine.W_k.weight, mine.W_v.weight]))
        mha.out_proj.weight.copy_(mine.W_o.weight)

    def ffn_and_norms(layer: nn.Module, block: nn.Module, norms: int) -> None:
        layer.linear1.load_state_dict(block.ffn.dense1.state_dict())
        layer.linear2.load_state_dict(block.ffn.dense2.state_dict())
        for i in range(1, norms + 1):
            getattr(layer, f"norm{i}").load_state_dict(getattr(block, f"addnorm{i}").ln.state_dict())

    for block, layer in zip(src.encoder_blocks, dst.transformer.encoder.layers, strict=True):
        attention(layer.self_attn, block.attention)
        ffn_and_norms(layer, block, 2)
    for block, layer in zip(src.decoder_blocks, dst.transformer.decoder.layers, strict=True):
        attention(layer.self_attn, block.attention1)
        attention(layer.multihead_attn, block.attention2)
        ffn_and_norms(layer, block, 3)
