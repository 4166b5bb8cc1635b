"""Skip-gram training pairs with negative sampling (book 14.3) from sentences of space-separated words.

The book's pipeline, vectorised:
- a vocabulary of the words seen at least `min_freq` times (the rest, and PTB's own `<unk>`, are dropped);
- subsampling: a word of count c among N kept words stays with probability sqrt(t * N / c) (t = 1e-4);
- each kept word of a sentence of two or more words is a centre; its contexts are the words at most w
  positions away, w drawn uniformly from 1..max_window_size per centre;
- K negatives per context word, drawn from the vocabulary (not `<unk>`) with probability ∝ count^0.75 and
  never one of the centre's contexts (the book redraws those);
- a batch: centres (B, 1), contexts then negatives then padding (B, L) with L = (K + 1) × the batch's most
  contexts, a mask of the real entries and labels (1 for contexts).

Random draws. The book draws subsampling, windows and negatives once and shuffles the pairs every epoch;
here they come from (seed, 0) (`redraw=false`, the book) or afresh from (seed, epoch) (`redraw=true`), and
the order of an epoch from (seed, epoch): a resumed run sees exactly the batches an uninterrupted one would.
"""

import logging
from pathlib import Path
from typing import Annotated

import torch
from torch import Tensor

from dlrun.data.base import DataModule
from dlrun.data.embeddings import embedding_layer
from dlrun.data.text import Vocab
from dlrun.errors import DlrunError
from dlrun.ranges import BatchSize, Min

log = logging.getLogger("dlrun")

PTB_URL = "http://d2l-data.s3-accelerate.amazonaws.com/ptb.zip"
PTB_SHA1 = "319d85e578af0cdc590547f26231e4e31cdf1e42"


def read_sentences(path: Path) -> list[list[str]]:
    """The book's read_ptb: one sentence per line, words split on spaces."""
    if not path.is_file():
        raise DlrunError(
            f"{path.resolve()} not found; unpack the book's {PTB_URL} (sha1 {PTB_SHA1}) into "
            f"{path.parent} or point DLRUN_DATA_DIR (paths.data_dir) at the folder that holds ptb/"
        )
    return [line.split() for line in path.read_text(encoding="utf-8").split("\n")]


def generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Draw:
    """One draw of centres, contexts (C, 2·max_window) and negatives (C, 2·max_window·K), each table
    filled from the left, and the number of contexts per centre."""

    def __init__(self, centers: Tensor, contexts: Tensor, num_contexts: Tensor, negatives: Tensor):
        self.centers, self.contexts, self.negatives = centers, contexts, negatives
        self.num_contexts = num_contexts

    def __len__(self) -> int:
        return len(self.centers)

    def num_pairs(self) -> int:
        return int(self.num_contexts.sum())

    def batch(self, index: Tensor, num_noise: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(centers (B,1), contexts_negatives (B,L), mask (B,L), labels (B,L)), padded with 0."""
        n = self.num_contexts[index].long()[:, None]
        width = int(n.max()) * (num_noise + 1)
        k = torch.arange(width)[None, :]
        table = torch.cat([self.contexts[index], self.negatives[index]], dim=1).long()
        source = torch.where(k < n, k, self.contexts.shape[1] + k - n)
        mask = k < n * (num_noise + 1)
        values = table.gather(1, source.clamp(max=table.shape[1] - 1)) * mask
        return self.centers[index].long()[:, None], values, mask.float(), (k < n).float()


class Word2VecData(DataModule):
    """Skip-gram batches from a file of sentences (one per line, words separated by spaces)."""

    def __init__(
        self,
        path: str | Path,
        batch_size: BatchSize = 512,
        min_freq: Annotated[int, Min(1)] = 10,
        max_window_size: Annotated[int, Min(1)] = 5,
        num_noise_words: Annotated[int, Min(1)] = 5,
        subsample_t: Annotated[float, Min(0)] = 1e-4,
        redraw: bool = False,
        pretrained_embeddings: str | None = None,
        freeze_embeddings: bool = False,
    ):
        super().__init__(batch_size)
        # the config check reads the annotations only where a subclass names them; check here as well
        for name, value, low in (
            ("min_freq", min_freq, 1),
            ("max_window_size", max_window_size, 1),
            ("num_noise_words", num_noise_words, 1),
            ("subsample_t", subsample_t, 0),
        ):
            if value < low:
                raise DlrunError(f"data.{name}={value} must be >= {low}")
        self.path = Path(path)
        self.max_window_size, self.num_noise, self.t, self.redraw = (
            max_window_size,
            num_noise_words,
            subsample_t,
            redraw,
        )
        sentences = read_sentences(self.path)
        self.vocab = Vocab([w for line in sentences for w in line], min_freq=min_freq)
        if len(self.vocab) < 3:
            raise DlrunError(
                f"{self.path}: {len(self.vocab) - 1} words seen data.min_freq={min_freq} times or more; "
                "skip-gram needs at least two (lower data.min_freq or use a longer text)"
            )
        ids = [[i for i in self.vocab[line] if i != self.vocab.unk] for line in sentences]
        self.lengths = torch.tensor([len(line) for line in ids])
        self.ids = torch.tensor([i for line in ids for i in line], dtype=torch.long)
        self.counts = torch.bincount(self.ids, minlength=len(self.vocab))
        weights = self.counts.double() ** 0.75
        weights[self.vocab.unk] = 0
        self.noise_cdf = torch.cumsum(weights / weights.sum(), 0)
        self.model_kwargs = {"vocab_size": len(self.vocab)}
        if pretrained_embeddings:
            layer = embedding_layer(pretrained_embeddings, self.vocab.idx_to_token, freeze_embeddings)
            self.model_kwargs |= {"pretrained": layer.weight.data, "freeze": freeze_embeddings}
        self._draws: dict[int, Draw] = {}
        log.info(
            "%s: %d sentences, %d words kept (vocab %d with min_freq %d)",
            self.path.name,
            len(sentences),
            len(self.ids),
            len(self.vocab),
            min_freq,
        )

    def checkpoint_state(self) -> dict:
        return {"vocab": list(self.vocab.idx_to_token)}

    # ---------------------------------------------------------------- draws
    def subsample(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Kept word ids and the sentence of each."""
        keep_p = torch.sqrt(self.t * len(self.ids) / self.counts[self.ids].double())
        keep = torch.rand(len(self.ids), generator=gen, dtype=torch.double) < keep_p
        sentence = torch.repeat_interleave(torch.arange(len(self.lengths)), self.lengths)
        return self.ids[keep], sentence[keep]

    def draw(self, key: int) -> Draw:
        gen = generator(self.seed, key)
        ids, sentence = self.subsample(gen)
        lengths = torch.bincount(sentence, minlength=len(self.lengths))
        starts = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(len(ids)) - starts[sentence]
        length = lengths[sentence]
        centre = length >= 2
        ids, position, length = ids[centre], position[centre], length[centre]
        flat = torch.arange(len(ids))
        window = torch.randint(1, self.max_window_size + 1, (len(ids),), generator=gen)
        span = self.max_window_size
        offsets = torch.cat([torch.arange(-span, 0), torch.arange(1, span + 1)])
        where = position[:, None] + offsets[None, :]
        valid = (offsets.abs()[None, :] <= window[:, None]) & (where >= 0) & (where < length[:, None])
        context = ids[(flat[:, None] + offsets[None, :]).clamp(0, len(ids) - 1)] * valid
        # valid ones first, in their left-to-right order (a stable sort of the invalid flags)
        order = torch.sort((~valid).int(), dim=1, stable=True).indices
        contexts, num_contexts = context.gather(1, order), valid.sum(1)
        negatives = self.negatives(contexts, num_contexts, gen)
        return Draw(ids.int(), contexts.int(), num_contexts.int(), negatives.int())

    def negatives(self, contexts: Tensor, num_contexts: Tensor, gen: torch.Generator) -> Tensor:
        """(C, K·2·max_window) noise words, none among the centre's contexts (redrawn until so)."""
        width = contexts.shape[1] * self.num_noise
        out = torch.empty(len(contexts), width, dtype=torch.long)
        for start in range(0, len(contexts), 65536):
            ctx = contexts[start : start + 65536]
            real = torch.arange(ctx.shape[1])[None, :] < num_contexts[start : start + 65536, None]
            ctx = torch.where(real, ctx, -1)
            noise = self.sample_noise((len(ctx), width), gen)
            for _ in range(100):
                clash = (noise[:, :, None] == ctx[:, None, :]).any(-1)
                if not clash.any():
                    break
                noise[clash] = self.sample_noise((int(clash.sum()),), gen)
            out[start : start + 65536] = noise
        return out

    def sample_noise(self, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
        u = torch.rand(shape, generator=gen, dtype=torch.double)
        return torch.searchsorted(self.noise_cdf, u, right=True).clamp(max=len(self.noise_cdf) - 1)

    def epoch_draw(self, epoch: int) -> Draw:
        key = epoch if self.redraw else 0
        if key not in self._draws:
            self._draws = {key: self.draw(key)}  # one draw held at a time
            d = self._draws[key]
            log.info("draw %d: %d centres, %d centre-context pairs", key, len(d), d.num_pairs())
        return self._draws[key]

    # -------------------------------------------------------------- loaders
    def train_loader(self, epoch: int = 0, skip: int = 0):
        draw = self.epoch_draw(epoch)
        return Word2VecBatches(self, draw, self.train_sampler(len(draw), epoch, skip))

    def val_loader(self) -> list:
        return []


class Word2VecBatches:
    def __init__(self, data: Word2VecData, draw: Draw, sampler):
        self.data, self.draw, self.sampler = data, draw, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        device = self.data.device
        for index in self.sampler:
            yield tuple(t.to(device) for t in self.draw.batch(index, self.data.num_noise))


class PTBWord2VecData(Word2VecData):
    """The book's Penn Treebank: `<root>/ptb/ptb.train.txt` (the unpacked ptb.zip)."""

    def __init__(self, root: str | Path = "data", split: str = "train", **kwargs):
        if split not in ("train", "valid", "test"):
            raise DlrunError(f"data.split={split!r}; use train, valid or test")
        super().__init__(Path(root) / "ptb" / f"ptb.{split}.txt", **kwargs)
