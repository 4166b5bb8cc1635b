"""The book's GRU encoder-decoder with Bahdanau (additive) attention (10.4).

At each step the decoder's previous top-layer state queries the encoder's outputs (padding masked by the
source's valid length); the context it gets is fed next to the embedded input. The state carries the
attention weights of every step so far, so `attention_weights["decoder"]` covers the whole output after
step-by-step decoding (a beam search reorders them with the rest of the state).
"""

import torch
from torch import Tensor

from dlrun.models.attention import AdditiveAttention
from dlrun.models.seq2seq import Seq2Seq, State


class Bahdanau(Seq2Seq):
    """Seq2Seq's encoder and decoder layers, with an additive attention between them.

    state = (encoder outputs (batch, S, hidden), decoder state (batch, layers, hidden), source valid
    lengths (batch,), attention weights so far (batch, steps, S))."""

    def add_attention(self, hidden_size: int, dropout: float) -> None:
        self.attention = AdditiveAttention(hidden_size, hidden_size, hidden_size, dropout)

    def encode(self, src: Tensor, src_len: Tensor) -> State:
        outputs, hidden = self.encoder(src)
        no_steps_yet = outputs.new_zeros(src.shape[0], 0, src.shape[1])
        return outputs, hidden.transpose(0, 1), src_len, no_steps_yet

    def decode(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        enc_outputs, hidden, src_len, weights = state
        hidden = hidden.transpose(0, 1).contiguous()
        x = self.embedding(tokens)
        outputs, step_weights = [], []
        for t in range(x.shape[1]):
            query = hidden[-1][:, None, :]
            context = self.attention(query, enc_outputs, enc_outputs, src_len)
            out, hidden = self.rnn(torch.cat([context, x[:, t : t + 1]], dim=-1), hidden)
            outputs.append(out)
            step_weights.append(self.attention.attention_weights.to(weights.dtype))
        weights = torch.cat([weights, *step_weights], dim=1)
        self.attention_weights = {"decoder": [weights[:, None]]}
        logits = self.dense(torch.cat(outputs, dim=1))
        return logits, (enc_outputs, hidden.transpose(0, 1), src_len, weights)
