"""The book's skip-gram (14.4): a centre-word table v and a context-word table u; the score of a centre c
and a word o is u_o · v_c."""

from typing import Annotated

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError
from dlrun.ranges import Min


class SkipGram(nn.Module):
    """Both tables start Xavier-uniform, as the book's training function initialises them (nn.Embedding's own
    N(0, 1) start gives scores of size ~sqrt(embed_size) and a loss near 3 after the first epoch).
    `pretrained` (vocab_size, embed_size) initialises the centre table (`freeze`: it stays fixed); the
    data module passes both when `data.pretrained_embeddings` is set."""

    def __init__(
        self,
        vocab_size: Annotated[int, Min(1)],
        embed_size: Annotated[int, Min(1)] = 100,
        pretrained: Tensor | None = None,
        freeze: bool = False,
    ):
        super().__init__()
        self.center = nn.Embedding(vocab_size, embed_size)  # the book's embed_v: the word vectors it reads
        self.context = nn.Embedding(vocab_size, embed_size)  # embed_u
        nn.init.xavier_uniform_(self.center.weight)
        nn.init.xavier_uniform_(self.context.weight)
        if pretrained is not None:
            if tuple(pretrained.shape) != (vocab_size, embed_size):
                raise DlrunError(
                    f"the pretrained embeddings are {tuple(pretrained.shape)}, the model needs "
                    f"({vocab_size}, {embed_size}); set model.embed_size={pretrained.shape[1]}"
                )
            self.center.weight.data.copy_(pretrained)
            self.center.weight.requires_grad_(not freeze)

    def forward(self, center: Tensor, contexts_and_negatives: Tensor) -> Tensor:
        """(B, 1), (B, L) -> scores (B, 1, L)."""
        return torch.bmm(self.center(center), self.context(contexts_and_negatives).transpose(1, 2))

    @property
    def word_vectors(self) -> Tensor:
        return self.center.weight
