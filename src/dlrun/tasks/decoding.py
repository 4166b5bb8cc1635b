"""Generating target sentences with an encoder-decoder (see dlrun.models.seq2seq for the interface):
greedy decoding (the book's `predict_seq2seq`) and beam search (book 9.8). Both return token ids without
`<eos>`; a sentence that never emits `<eos>` stops after `max_len` tokens.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.models.seq2seq import select_state


@torch.no_grad()
def greedy(
    model: nn.Module, src: Tensor, src_len: Tensor, bos: int, eos: int, max_len: int
) -> list[list[int]]:
    """The most likely next token at every step, for a whole batch at once."""
    state = model.encode(src, src_len)
    tokens = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
    outputs, done = [], torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits, state = model.decode(tokens, state)
        tokens = logits[:, -1].argmax(dim=-1, keepdim=True)
        outputs.append(tokens)
        done |= tokens[:, 0] == eos
        if bool(done.all()):
            break
    rows = torch.cat(outputs, dim=1).tolist() if outputs else [[] for _ in range(src.shape[0])]
    return [row[: row.index(eos)] if eos in row else row for row in rows]


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src: Tensor,
    src_len: Tensor,
    bos: int,
    eos: int,
    pad: int,
    max_len: int,
    beam_size: int,
    length_penalty: float = 0.75,
) -> list[int]:
    """One sentence (src of shape (1, S)). Keeps the `beam_size` most likely sequences by summed log
    probability; a sequence that has emitted `<eos>` stays in the beam unchanged (so with beam_size=1 this
    is greedy decoding). Of the final beam, returns the one with the best log P / L^length_penalty, L its
    length with `<eos>` (the book's choice of the output)."""
    state = model.encode(src, src_len)
    device = src.device
    tokens = torch.full((1, 1), bos, dtype=torch.long, device=device)
    sequences = torch.zeros(1, 0, dtype=torch.long, device=device)
    scores = torch.zeros(1, device=device)
    finished = torch.zeros(1, dtype=torch.bool, device=device)
    for _ in range(max_len):
        logits, state = model.decode(tokens, state)
        candidates = scores[:, None] + F.log_softmax(logits[:, -1].float(), dim=-1)
        # A finished sequence has one continuation, `<pad>`, at its unchanged score.
        frozen = torch.full_like(candidates, -torch.inf)
        frozen[:, pad] = scores
        candidates = torch.where(finished[:, None], frozen, candidates)
        vocab = candidates.shape[1]
        width = min(beam_size, int(torch.isfinite(candidates).sum()))
        scores, flat = candidates.reshape(-1).topk(width)
        rows, next_tokens = flat // vocab, flat % vocab
        sequences = torch.cat([sequences[rows], next_tokens[:, None]], dim=1)
        finished = finished[rows] | (next_tokens == eos)
        state = select_state(state, rows)
        tokens = next_tokens[:, None]
        if bool(finished.all()):
            break
    best, best_score = [], -torch.inf
    for row, score in zip(sequences.tolist(), scores.tolist(), strict=True):
        length = row.index(eos) + 1 if eos in row else len(row)
        normalized = score / max(length, 1) ** length_penalty
        if normalized > best_score:
            best, best_score = row[: row.index(eos)] if eos in row else row, normalized
    return best
