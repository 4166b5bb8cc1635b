"""Skip-gram with negative sampling (book 14.4): masked binary cross-entropy, nearest words, analogies.

The loss of a centre is the mean binary cross-entropy over its real contexts and negatives (padding masked
out), as the book's `SigmoidBCELoss(...) / mask.sum(axis=1) * mask.shape[1]`; train/loss is its mean over
centres, the figure the book prints. At the end of training the centre vectors are written to
`embeddings.txt` (GloVe text format) and the nearest words to `query` are logged; mode=predict answers
`query` and `analogy` from a checkpoint and writes `nearest.tsv` / `analogies.tsv`.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.data.embeddings import TokenEmbedding, analogy, nearest, write_vectors
from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.ranges import Min
from dlrun.tasks.base import StepResult, Task

log = logging.getLogger("dlrun")

EMBEDDINGS_FILE = "embeddings.txt"


def masked_bce(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Per example: the mean binary cross-entropy with logits over the entries where mask is 1."""
    losses = F.binary_cross_entropy_with_logits(scores.float(), labels, weight=mask, reduction="none")
    return losses.sum(1) / mask.sum(1)


def word_table(model: nn.Module, idx_to_token: Sequence[str]) -> TokenEmbedding:
    vectors = model.word_vectors.detach().float().cpu()
    return TokenEmbedding(list(idx_to_token)[1:], vectors[1:])  # row 0 is the vocabulary's <unk>


class Word2VecTask(Task):
    def __init__(
        self,
        query: Sequence[str] | str = ("chip", "baby", "beautiful"),
        k: Annotated[int, Min(1)] = 3,
        analogy: Sequence[str] | None = None,
        exclude_inputs: bool = True,
        monitor: str | None = None,
        mode: str = "min",
    ):
        self.monitor, self.mode = monitor, mode  # no held-out data: no best epoch by default
        self.query = [query] if isinstance(query, str) else list(query or [])
        if analogy is not None and (isinstance(analogy, str) or len(analogy) % 3):
            raise DlrunError(
                f"task.analogy={analogy!r}: give words in threes, a b c for 'a is to b as c is to ?'"
            )
        self.analogy = [list(analogy[i : i + 3]) for i in range(0, len(analogy or []), 3)]
        self.k, self.exclude_inputs = k, exclude_inputs

    def step(self, model: nn.Module, batch) -> StepResult:
        center, contexts_negatives, mask, labels = batch
        scores = model(center, contexts_negatives).reshape(labels.shape)
        losses = masked_bce(scores, labels, mask)
        return losses.mean(), {"loss": losses.detach().sum()}, len(losses)

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        return {"loss": sums["loss"] / count} if count else {}

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        vocab = ctx.data.vocab.idx_to_token
        path = write_vectors(Path(ctx.run_dir) / EMBEDDINGS_FILE, vocab, model.word_vectors)
        log.info("word vectors written to %s", path)
        table = word_table(model, vocab)
        for word in self.query:
            if word in table.token_to_idx:
                text = self.format_nearest(word, nearest(table, word, self.k))
                log.info(text)
                ctx.logger.log_text(f"nearest/{word}", text, ctx.epoch)

    @staticmethod
    def format_nearest(word: str, found: list[tuple[str, float]]) -> str:
        return f"nearest to {word!r}: " + ", ".join(f"{w} {c:.3f}" for w, c in found)

    def predict(self, model: nn.Module, data, run_dir: str | Path) -> dict:
        """`query` -> nearest.tsv (word, rank, neighbour, cosine); `analogy` -> analogies.tsv."""
        if not self.query and not self.analogy:
            raise DlrunError(
                "nothing to predict: set task.query='[chip, baby]' or task.analogy='[man, woman, son]'"
            )
        table = word_table(model, data.vocab.idx_to_token)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        results = {"nearest": {}, "analogies": []}
        rows = []
        for word in self.query:
            found = nearest(table, word, self.k)
            results["nearest"][word] = found
            log.info(self.format_nearest(word, found))
            rows += [f"{word}\t{rank}\t{w}\t{c:.4f}\n" for rank, (w, c) in enumerate(found, start=1)]
        if rows:
            (run_dir / "nearest.tsv").write_text("word\trank\tneighbour\tcosine\n" + "".join(rows))
        for a, b, c in self.analogy:
            answer = analogy(table, a, b, c, self.exclude_inputs)
            results["analogies"].append((a, b, c, answer))
            log.info("%s : %s :: %s : %s", a, b, c, answer)
        if self.analogy:
            lines = "".join("\t".join(row) + "\n" for row in results["analogies"])
            (run_dir / "analogies.tsv").write_text("a\tb\tc\tanswer\n" + lines)
        log.info("written to %s", run_dir)
        return results
