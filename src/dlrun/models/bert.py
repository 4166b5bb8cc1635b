"""The book's BERT (14.8): token, segment and learned position embeddings summed, Transformer encoder blocks
(attention projections with biases), a masked-LM head and a next-sentence head.

The book adds its position embedding through `.data`, so it never learns; here it is an ordinary parameter
and does. Otherwise the network is the book's: no embedding scaling, no dropout on the embeddings, post-norm
blocks (dlrun.models.transformer's AddNorm and FFN).
"""

from typing import Annotated

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError
from dlrun.models.attention import MultiHeadAttention
from dlrun.models.transformer import AddNorm, PositionWiseFFN
from dlrun.ranges import Max, Min


class BertBlock(nn.Module):
    def __init__(self, hidden_size: int, ffn_hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout, bias=True)
        self.addnorm1 = AddNorm(hidden_size, dropout)
        self.ffn = PositionWiseFFN(hidden_size, ffn_hidden_size)
        self.addnorm2 = AddNorm(hidden_size, dropout)

    def forward(self, x: Tensor, valid_lens: Tensor | None) -> Tensor:
        y = self.addnorm1(x, self.attention(x, x, x, valid_lens))
        return self.addnorm2(y, self.ffn(y))


class BERTEncoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        ffn_hidden_size: int,
        num_heads: int,
        num_layers: int,
        dropout: float,
        max_len: int = 1000,
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, hidden_size)
        self.segment_embedding = nn.Embedding(2, hidden_size)
        self.blocks = nn.ModuleList(
            BertBlock(hidden_size, ffn_hidden_size, num_heads, dropout) for _ in range(num_layers)
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, max_len, hidden_size))

    def forward(self, tokens: Tensor, segments: Tensor, valid_lens: Tensor | None) -> Tensor:
        if tokens.shape[1] > (max_len := self.pos_embedding.shape[1]):
            raise DlrunError(f"{tokens.shape[1]} positions but model.max_len={max_len}; raise model.max_len")
        x = self.token_embedding(tokens) + self.segment_embedding(segments)
        x = x + self.pos_embedding[:, : x.shape[1]]
        for block in self.blocks:
            x = block(x, valid_lens)
        return x


class MaskLM(nn.Module):
    """Vocabulary logits at the predicted positions: (batch, positions, vocab)."""

    def __init__(self, vocab_size: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, vocab_size),
        )

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        return self.mlp(x[rows, positions])


class BERTModel(nn.Module):
    """forward(tokens, segments, valid_lens, pred_positions) -> (encoded, MLM logits or None, NSP logits)."""

    def __init__(
        self,
        vocab_size: Annotated[int, Min(1)],
        hidden_size: Annotated[int, Min(1)] = 128,
        ffn_hidden_size: Annotated[int, Min(1)] = 256,
        num_heads: Annotated[int, Min(1)] = 2,
        num_layers: Annotated[int, Min(1)] = 2,
        dropout: Annotated[float, Min(0), Max(1)] = 0.2,
        max_len: Annotated[int, Min(1)] = 1000,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise DlrunError(
                f"model.hidden_size={hidden_size} is not divisible by model.num_heads={num_heads}"
            )
        self.encoder = BERTEncoder(
            vocab_size, hidden_size, ffn_hidden_size, num_heads, num_layers, dropout, max_len
        )
        self.hidden = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Tanh())
        self.mlm = MaskLM(vocab_size, hidden_size)
        self.nsp = nn.Linear(hidden_size, 2)

    def forward(
        self,
        tokens: Tensor,
        segments: Tensor,
        valid_lens: Tensor | None = None,
        pred_positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        encoded = self.encoder(tokens, segments, valid_lens)
        mlm = self.mlm(encoded, pred_positions) if pred_positions is not None else None
        return encoded, mlm, self.nsp(self.hidden(encoded[:, 0, :]))
