"""The encoder-decoder interface of the translation models, and the book's GRU encoder-decoder (9.7).

Every model is an `EncoderDecoder`:
- `encode(src (batch, S), src_len (batch,)) -> state`, a tuple of batch-first tensors (so a beam search
  can reorder any model's state with `select_state`);
- `decode(tokens (batch, t), state) -> (logits (batch, t, tgt_vocab), state)` continues from `state`:
  t = T with teacher forcing, t = 1 per step when generating;
- `forward(src, src_len, tgt_in)`: encode, then decode the whole target input at once;
- attention models keep the weights of their last decode in `attention_weights`: kind -> one tensor
  (batch, heads, queries, keys) per layer.

The GRU decoder (book 9.7) feeds each step its embedded input next to a context: the encoder's last
top-layer state. It stays the encoder's through the whole decoding (the v2 book took the decoder's latest
state when predicting step by step, another input than in training; the 1.0 edition fixed it).
The encoder reads the padding too, as the book's.
"""

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError

State = tuple[Tensor, ...]


def select_state(state: State, index: Tensor) -> State:
    """The rows `index` of every tensor of a state (beam search keeps the best continuations)."""
    return tuple(s.index_select(0, index) for s in state)


def init_weights(model: nn.Module, scheme: str) -> None:
    """`xavier`: the book's `train_seq2seq` init, Xavier-uniform for Linear and GRU weights (each of
    nn.MultiheadAttention's q, k, v projections too); `default`: PyTorch's."""
    if scheme == "default":
        return
    if scheme != "xavier":
        raise DlrunError(f"model.init={scheme!r}; use xavier or default")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
        elif isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight"):
                    nn.init.xavier_uniform_(param)
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            for block in module.in_proj_weight.detach().chunk(3):
                nn.init.xavier_uniform_(block)


def check_sizes(**sizes: int) -> None:
    bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise DlrunError(", ".join(f"model.{k}={v!r}" for k, v in bad.items()) + " must be positive ints")


class EncoderDecoder(nn.Module):
    attention_weights: dict[str, list[Tensor]] | None = None

    def encode(self, src: Tensor, src_len: Tensor) -> State:
        raise NotImplementedError

    def decode(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, self.encode(src, src_len))[0]


class GRUEncoder(nn.Module):
    """Embedding, then a GRU: (batch, S) -> outputs (batch, S, hidden), state (layers, batch, hidden)."""

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size, hidden_size, num_layers, dropout=dropout, batch_first=True)

    def forward(self, src: Tensor) -> tuple[Tensor, Tensor]:
        return self.rnn(self.embedding(src))


class Seq2Seq(EncoderDecoder):
    """The book's RNN encoder-decoder: state = (context (batch, hidden), decoder state (batch, layers,
    hidden)), the decoder starting from the encoder's final state."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        embed_size: int = 32,
        hidden_size: int = 32,
        num_layers: int = 2,
        dropout: float = 0.1,
        init: str = "xavier",
    ):
        super().__init__()
        check_sizes(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            embed_size=embed_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
        )
        self.encoder = GRUEncoder(src_vocab_size, embed_size, hidden_size, num_layers, dropout)
        self.add_attention(hidden_size, dropout)
        self.embedding = nn.Embedding(tgt_vocab_size, embed_size)
        self.rnn = nn.GRU(
            embed_size + hidden_size, hidden_size, num_layers, dropout=dropout, batch_first=True
        )
        self.dense = nn.Linear(hidden_size, tgt_vocab_size)
        init_weights(self, init)

    def add_attention(self, hidden_size: int, dropout: float) -> None:
        """Modules between the encoder and the decoder's layers (Bahdanau's attention); none here."""

    def encode(self, src: Tensor, src_len: Tensor) -> State:
        _, state = self.encoder(src)
        state = state.transpose(0, 1)
        return state[:, -1], state

    def decode(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        context, hidden = state
        x = self.embedding(tokens)
        x = torch.cat([x, context[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        outputs, hidden = self.rnn(x, hidden.transpose(0, 1).contiguous())
        return self.dense(outputs), (context, hidden.transpose(0, 1))
