"""Recurrent language models (book ch. 8-9): RNN, GRU and LSTM written gate by gate ("from scratch", the
book's parameter names, weights N(0, 0.01), zero biases) and built on nn.RNN / nn.GRU / nn.LSTM.

One interface for all: `forward(tokens (batch, steps), state) -> (logits (batch, steps, vocab), state)` and
`begin_state(batch_size, device)`. States have nn.RNN's layout, (layers * directions, batch, hidden), a
(h, c) pair for LSTMs, so scratch and built-in models are interchangeable; with the same weights
(`copy_builtin_weights`) they compute the same outputs.

The book's GRU (eq. 9.1.3, Cho et al. 2014) resets before the recurrent product, tanh(X W_xh + (R ⊙ H) W_hh
+ b_h); nn.GRU (cuDNN's form) resets after it, tanh(X W_xh + b_h + R ⊙ (H W_hh + b_hn)). The scratch GRU
computes the book's by default and nn.GRU's with `reset_after=true`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlrun.errors import DlrunError

# The book's gate names, in the order their blocks are concatenated here.
GATES = {"rnn": ("h",), "gru": ("z", "r", "h"), "lstm": ("i", "f", "o", "c")}
# PyTorch's gate blocks in weight_ih_l* / weight_hh_l*, named as the book's.
TORCH_GATES = {"rnn": ("h",), "gru": ("r", "z", "h"), "lstm": ("i", "f", "c", "o")}
BUILTIN = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

State = Tensor | tuple[Tensor, Tensor]


class ScratchRecurrentLayer(nn.Module):
    """One layer, one direction, gate by gate: W_x* (input, hidden), W_h* (hidden, hidden), b_* (hidden).

    The input products of all time steps are computed at once before the loop (the same sums as the book's
    per-step X W_x*); one-hot inputs are looked up as rows of W_x* rather than multiplied."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, reset_after: bool = False, std=0.01):
        super().__init__()
        self.cell, self.hidden_size, self.reset_after = cell, hidden_size, reset_after
        for g in GATES[cell]:
            self.register_parameter(f"W_x{g}", nn.Parameter(torch.randn(input_size, hidden_size) * std))
            self.register_parameter(f"W_h{g}", nn.Parameter(torch.randn(hidden_size, hidden_size) * std))
            self.register_parameter(f"b_{g}", nn.Parameter(torch.zeros(hidden_size)))
        if cell == "gru" and reset_after:
            self.b_hn = nn.Parameter(torch.zeros(hidden_size))  # the bias inside R ⊙ (H W_hh + b_hn)

    def _cat(self, prefix: str, gates: tuple[str, ...] | None = None) -> Tensor:
        return torch.cat([getattr(self, f"{prefix}{g}") for g in gates or GATES[self.cell]], dim=-1)

    def forward(self, x: Tensor, h: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x: (steps, batch) token ids (one-hot input) or (steps, batch, input) -> outputs (steps, batch,
        hidden) and the last h (and c)."""
        w_x, b = self._cat("W_x"), self._cat("b_")
        xs = F.embedding(x, w_x) + b if x.dtype == torch.long else x @ w_x + b
        size, outputs = self.hidden_size, []
        if self.cell == "rnn":
            w_hh = self.W_hh
            for xt in xs:
                h = torch.tanh(xt + h @ w_hh)
                outputs.append(h)
        elif self.cell == "gru" and self.reset_after:
            w_h = self._cat("W_h")
            for xt in xs:
                hs = h @ w_h
                z, r = torch.sigmoid(xt[:, : 2 * size] + hs[:, : 2 * size]).chunk(2, dim=1)
                h_tilde = torch.tanh(xt[:, 2 * size :] + r * (hs[:, 2 * size :] + self.b_hn))
                h = z * h + (1 - z) * h_tilde
                outputs.append(h)
        elif self.cell == "gru":
            w_zr, w_hh = self._cat("W_h", ("z", "r")), self.W_hh
            for xt in xs:
                z, r = torch.sigmoid(xt[:, : 2 * size] + h @ w_zr).chunk(2, dim=1)
                h_tilde = torch.tanh(xt[:, 2 * size :] + (r * h) @ w_hh)
                h = z * h + (1 - z) * h_tilde
                outputs.append(h)
        else:  # lstm
            w_h = self._cat("W_h")
            for xt in xs:
                gates = xt + h @ w_h
                i, f, o = torch.sigmoid(gates[:, : 3 * size]).chunk(3, dim=1)
                c_tilde = torch.tanh(gates[:, 3 * size :])
                c = f * c + i * c_tilde
                h = o * torch.tanh(c)
                outputs.append(h)
        return torch.stack(outputs), h, c


class ScratchRecurrent(nn.Module):
    """A stack of scratch layers, both directions when bidirectional, with nn.RNN's call and state layout:
    forward(x (steps, batch[, input]), state) -> (outputs (steps, batch, directions * hidden), state)."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        reset_after: bool = False,
    ):
        super().__init__()
        self.cell, self.num_layers, self.dropout = cell, num_layers, dropout
        self.directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            ScratchRecurrentLayer(
                cell, input_size if layer == 0 else hidden_size * self.directions, hidden_size, reset_after
            )
            for layer in range(num_layers)
            for _ in range(self.directions)
        )

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h0, c0 = state if self.cell == "lstm" else (state, None)
        hs, cs = [], []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(self.directions):
                k = layer * self.directions + d
                inputs = x if d == 0 else x.flip(0)
                out, h, c = self.layers[k](inputs, h0[k], None if c0 is None else c0[k])
                outputs.append(out if d == 0 else out.flip(0))
                hs.append(h)
                cs.append(c)
            x = outputs[0] if self.directions == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)
        h = torch.stack(hs)
        return x, ((h, torch.stack(cs)) if self.cell == "lstm" else h)


class RNNLanguageModel(nn.Module):
    """Tokens -> one-hot vectors (the book) or a learned embedding -> recurrent layers -> Linear(vocab).

    cell: rnn | gru | lstm; scratch: the gates written by hand (ScratchRecurrent) or nn.RNN/nn.GRU/nn.LSTM;
    reset_after (GRU only): null picks the book's GRU for scratch and nn.GRU's form for built-in."""

    def __init__(
        self,
        vocab_size: int,
        cell: str = "gru",
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        scratch: bool = False,
        embed_size: int | None = None,
        dropout: float = 0.0,
        reset_after: bool | None = None,
    ):
        super().__init__()
        if cell not in GATES:
            raise DlrunError(f"model.cell={cell!r}; use rnn, gru or lstm")
        if vocab_size < 1 or hidden_size < 1 or num_layers < 1:
            raise DlrunError(
                f"model.vocab_size={vocab_size}, hidden_size={hidden_size} and num_layers={num_layers} "
                "must be >= 1"
            )
        if reset_after is not None and cell != "gru":
            raise DlrunError(f"model.reset_after is a GRU option; model.cell={cell} has no reset gate")
        if cell == "gru" and not scratch and reset_after is False:
            raise DlrunError(
                "nn.GRU resets after the recurrent product (reset_after=true); "
                "the book's GRU (reset_after=false) needs model.scratch=true"
            )
        self.vocab_size, self.cell, self.hidden_size = vocab_size, cell, hidden_size
        self.num_layers, self.directions, self.scratch = num_layers, 2 if bidirectional else 1, scratch
        self.embedding = nn.Embedding(vocab_size, embed_size) if embed_size else None
        input_size = embed_size or vocab_size
        if scratch:
            self.rnn = ScratchRecurrent(
                cell, input_size, hidden_size, num_layers, bidirectional, dropout, bool(reset_after)
            )
        else:
            self.rnn = BUILTIN[cell](
                input_size, hidden_size, num_layers, dropout=dropout, bidirectional=bidirectional
            )
        self.output = nn.Linear(hidden_size * self.directions, vocab_size)
        if scratch:  # the book's W_hq ~ N(0, 0.01), b_q = 0
            nn.init.normal_(self.output.weight, std=0.01)
            nn.init.zeros_(self.output.bias)

    def begin_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        shape = (self.num_layers * self.directions, batch_size, self.hidden_size)
        dtype = self.output.weight.dtype
        h = torch.zeros(shape, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """tokens (batch, steps) -> logits (batch, steps, vocab) and the state after the last step."""
        if state is None:
            state = self.begin_state(tokens.shape[0], tokens.device)
        x = tokens.T  # time major inside, as the book
        if self.embedding is not None:
            x = self.embedding(x)
        elif not self.scratch:
            x = F.one_hot(x, self.vocab_size).to(self.output.weight.dtype)
        outputs, state = self.rnn(x, state)
        return self.output(outputs.transpose(0, 1)), state


def detach_state(state: State | None) -> State | None:
    """Cut the graph behind a carried state (sequential partitioning: gradients stop at the batch start)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


@torch.no_grad()
def copy_builtin_weights(scratch: RNNLanguageModel, builtin: RNNLanguageModel) -> None:
    """Give a scratch model a built-in model's weights (same cell and sizes; a GRU needs reset_after=true).
    nn.* keeps two biases per gate; outside nn.GRU's candidate they only ever appear summed."""
    if not scratch.scratch or builtin.scratch:
        raise ValueError("copy_builtin_weights(scratch_model, builtin_model)")
    if scratch.cell == "gru" and not scratch.rnn.layers[0].reset_after:
        raise ValueError("the book's GRU (reset_after=false) computes another function than nn.GRU")
    src, size = builtin.rnn, builtin.hidden_size
    for layer in range(builtin.num_layers):
        for d in range(builtin.directions):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(src, f"weight_ih{suffix}"), getattr(src, f"weight_hh{suffix}")
            b_ih, b_hh = getattr(src, f"bias_ih{suffix}"), getattr(src, f"bias_hh{suffix}")
            dst = scratch.rnn.layers[layer * builtin.directions + d]
            for j, g in enumerate(TORCH_GATES[builtin.cell]):
                rows = slice(j * size, (j + 1) * size)
                getattr(dst, f"W_x{g}").copy_(w_ih[rows].T)
                getattr(dst, f"W_h{g}").copy_(w_hh[rows].T)
                if builtin.cell == "gru" and g == "h":
                    dst.b_h.copy_(b_ih[rows])
                    dst.b_hn.copy_(b_hh[rows])
                else:
                    getattr(dst, f"b_{g}").copy_(b_ih[rows] + b_hh[rows])
    scratch.output.load_state_dict(builtin.output.state_dict())
    if builtin.embedding is not None:
        scratch.embedding.load_state_dict(builtin.embedding.state_dict())
