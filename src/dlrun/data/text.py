"""Plain text for language models (book ch. 8): preprocessing, tokens, a vocabulary, and the two ways the
book cuts a token stream into (X, Y) minibatches of `num_steps` time steps, Y being X shifted by one.

Splits. The book trains on a stream and has no validation set; here the last `val_fraction` of the file's
tokens is held out as a validation stream (10% by default). The training stream is what comes before it,
cut to its first `max_tokens` tokens when set: with `max_tokens=10000` it is exactly the v2 book's corpus
(`load_corpus_time_machine(max_tokens=10000)`) and the held-out stream is the end of the book, the same for
every `max_tokens`, so validation perplexities stay comparable between corpus sizes.

Order. Each epoch's offset and (for random sampling) permutation come from (seed, epoch) alone, so a resumed
run sees exactly the batches an uninterrupted one would.
"""

import collections
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from dlrun.data.base import DataModule
from dlrun.data.download import download as fetch
from dlrun.data.download import sha1
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, OptionalBatchSize

log = logging.getLogger("dlrun")

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TOKENS = ("char", "word")
SAMPLINGS = ("random", "sequential")


def preprocess(text: str) -> str:
    """The book's cleaning: every run of non-letters (newlines included) becomes one space, then lowercase.

    The whole text is cleaned at once (as the 1.0 edition), so a line break separates words; the v2 edition
    cleaned line by line and joined the lines without a space ("speak of himwas expounding")."""
    return re.sub("[^A-Za-z]+", " ", text).strip().lower()


def tokenize(text: str, token: str = "char") -> list[str]:
    """Characters (spaces included) or words of an already preprocessed text."""
    if token == "char":
        return list(text)
    if token == "word":
        return text.split()
    raise DlrunError(f"data.token={token!r}; use char or word")


def detokenize(tokens: Iterable[str], token: str = "char") -> str:
    return ("" if token == "char" else " ").join(tokens)


class Vocab:
    """Tokens <-> indices, as the book's: index 0 is `<unk>`, then the reserved tokens, then every token seen
    at least `min_freq` times from the most to the least frequent (ties in order of first appearance)."""

    def __init__(self, tokens: Iterable[str] = (), min_freq: int = 0, reserved_tokens: Sequence[str] = ()):
        counter = collections.Counter(tokens)
        self.token_freqs = sorted(counter.items(), key=lambda item: item[1], reverse=True)
        self.idx_to_token = ["<unk>", *[t for t in reserved_tokens if t != "<unk>"]]
        self.token_to_idx = {token: idx for idx, token in enumerate(self.idx_to_token)}
        for token, freq in self.token_freqs:
            if freq < min_freq:
                break
            if token not in self.token_to_idx:
                self.token_to_idx[token] = len(self.idx_to_token)
                self.idx_to_token.append(token)

    def __len__(self) -> int:
        return len(self.idx_to_token)

    @property
    def unk(self) -> int:
        return 0

    def __getitem__(self, tokens):
        """One token -> its index (`<unk>`'s for unknown tokens); a list or tuple -> a list of indices."""
        if isinstance(tokens, (list, tuple)):
            return [self.__getitem__(t) for t in tokens]
        return self.token_to_idx.get(tokens, self.unk)

    def to_tokens(self, indices):
        if isinstance(indices, (list, tuple)):
            return [self.idx_to_token[int(i)] for i in indices]
        return self.idx_to_token[int(indices)]


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class SequenceBatches:
    """The (X, Y) minibatches of one pass over a token stream; `X[b, t]` is followed by `Y[b, t]`.

    sequential (the book's `seq_data_iter_sequential`): drop a random head of 0..num_steps tokens, lay the
    rest out as `batch_size` rows of consecutive text, and walk along them `num_steps` at a time, so row b
    of a batch continues row b of the previous batch (the hidden state may be carried over).
    random (`seq_data_iter_random`): drop a random head of 0..num_steps-1 tokens, cut the rest into
    subsequences of `num_steps` tokens and batch them in a random order (each batch needs a fresh state).
    No token is used twice in a pass; left out are the head, the last < num_steps tokens of each row
    (sequential) or < batch_size of the subsequences, picked at random (random).
    Each rank of a data-parallel run takes every world_size-th row of each batch.
    """

    def __init__(
        self,
        corpus: Tensor,
        batch_size: BatchSize,
        num_steps: int,
        sampling: str,
        device: torch.device,
        generator: torch.Generator | None = None,
        skip: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.device, self.skip = device, skip
        rows = slice(rank, None, world_size)
        n = len(corpus)
        if sampling == "sequential":
            offset = 0 if generator is None else int(torch.randint(num_steps + 1, (1,), generator=generator))
            num_tokens = max(0, (n - offset - 1) // batch_size * batch_size)
            xs = corpus[offset : offset + num_tokens].reshape(batch_size, -1)[rows]
            ys = corpus[offset + 1 : offset + 1 + num_tokens].reshape(batch_size, -1)[rows]
            self.num_batches = xs.shape[1] // num_steps
            self.xs, self.ys, self.num_steps = xs, ys, num_steps
            self.starts = None
        elif sampling == "random":
            offset = 0 if generator is None else int(torch.randint(num_steps, (1,), generator=generator))
            num_subseqs = max(0, (n - offset - 1) // num_steps)
            starts = offset + num_steps * torch.arange(num_subseqs, device=corpus.device)
            if generator is not None:
                starts = starts[torch.randperm(num_subseqs, generator=generator).to(corpus.device)]
            self.num_batches = num_subseqs // batch_size
            self.starts = starts[: self.num_batches * batch_size].reshape(self.num_batches, batch_size)
            self.starts = self.starts[:, rows]
            self.steps = torch.arange(num_steps, device=corpus.device)
            self.corpus = corpus
        else:
            raise DlrunError(f"data.sampling={sampling!r}; use random or sequential")

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        non_blocking = self.device.type == "cuda"
        for b in range(self.skip, self.num_batches):
            if self.starts is None:
                x = self.xs[:, b * self.num_steps : (b + 1) * self.num_steps]
                y = self.ys[:, b * self.num_steps : (b + 1) * self.num_steps]
            else:
                index = self.starts[b][:, None] + self.steps  # (batch, num_steps) positions
                x, y = self.corpus[index], self.corpus[index + 1]
            yield x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)


class TextData(DataModule):
    """A language-model data module over one plain-text file (see the module docstring for the splits).

    `vocab`, `token` and `sampling` are what the language-model task reads; `model_kwargs` gives the model
    its vocabulary size."""

    def __init__(
        self,
        path: str | Path,
        batch_size: BatchSize = 32,
        num_steps: int = 35,
        sampling: str = "sequential",
        token: str = "char",
        max_tokens: int | None = None,
        min_freq: int = 0,
        reserved_tokens: Sequence[str] = (),
        val_fraction: float = 0.1,
        val_batch_size: OptionalBatchSize = None,
        encoding: str = "utf-8",
    ):
        if sampling not in SAMPLINGS:
            raise DlrunError(f"data.sampling={sampling!r}; use random or sequential")
        if token not in TOKENS:
            raise DlrunError(f"data.token={token!r}; use char or word")
        if batch_size < 1 or num_steps < 1:
            raise DlrunError(f"data.batch_size={batch_size} and data.num_steps={num_steps} must be >= 1")
        if not 0.0 <= val_fraction < 1.0:
            raise DlrunError(f"data.val_fraction={val_fraction} must lie in [0, 1)")
        if max_tokens is not None and max_tokens < 1:
            raise DlrunError(f"data.max_tokens={max_tokens} must be >= 1 (or null for the whole text)")
        super().__init__(batch_size, val_batch_size)
        self.path = Path(path)
        self.num_steps, self.sampling, self.token = num_steps, sampling, token

        tokens = tokenize(preprocess(self.read_text(encoding)), token)
        if not tokens:
            raise DlrunError(f"{self.path} holds no letters: nothing to learn from")
        # The vocabulary covers the whole file, as the book's (built before max_tokens cuts the corpus).
        self.vocab = Vocab(tokens, min_freq, reserved_tokens)
        ids = torch.tensor(self.vocab[tokens], dtype=torch.long)
        num_val = round(len(ids) * val_fraction)
        num_train = len(ids) - num_val
        if max_tokens is not None:
            num_train = min(num_train, max_tokens)
        self.train_ids, self.val_ids = ids[:num_train], ids[len(ids) - num_val :]
        self.model_kwargs = {"vocab_size": len(self.vocab)}

        need = batch_size * num_steps + num_steps + 1  # one full batch after the largest random head
        if len(self.train_ids) < need:
            raise DlrunError(
                f"{self.path}: the training stream has {len(self.train_ids)} {token} tokens, fewer than one "
                f"batch needs ({need} for data.batch_size={batch_size}, data.num_steps={num_steps}); "
                "use a longer text or smaller batch_size/num_steps"
            )
        # A short held-out stream is read with fewer rows rather than not at all.
        self.val_rows = min(self.val_batch_size, max(1, (len(self.val_ids) - 1) // num_steps))
        if num_val and (len(self.val_ids) - 1) // self.val_rows < num_steps:
            raise DlrunError(
                f"{self.path}: the held-out stream has {len(self.val_ids)} tokens, fewer than "
                f"data.num_steps={num_steps} + 1; raise data.val_fraction or lower data.num_steps"
            )
        log.info(
            "%s: %d %s tokens (vocab %d): %d for training%s, %d held out",
            self.path.name,
            len(ids),
            token,
            len(self.vocab),
            len(self.train_ids),
            f" (data.max_tokens={max_tokens})" if max_tokens is not None else "",
            len(self.val_ids),
        )

    def read_text(self, encoding: str) -> str:
        if not self.path.is_file():
            raise DlrunError(f"text file {self.path.resolve()} not found; set data.path to a plain-text file")
        try:
            return self.path.read_text(encoding=encoding)
        except (UnicodeDecodeError, LookupError) as err:
            reason = first_line(err)
            raise DlrunError(
                f"{self.path} could not be read as {encoding} ({reason}); set data.encoding"
            ) from None

    def checkpoint_state(self) -> dict:
        """Saved in every checkpoint, so that predict mode can check it rebuilt the same vocabulary."""
        return {"vocab": list(self.vocab.idx_to_token)}

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if self.batch_size % world_size or self.val_rows % world_size:
            raise DlrunError(
                f"data.batch_size={self.batch_size} (and {self.val_rows} validation rows) must be divisible "
                f"by the {world_size} processes"
            )
        super().setup(device, seed, rank, world_size)
        # Token ids are small: keep them on the device and cut batches there.
        self.train_ids, self.val_ids = self.train_ids.to(device), self.val_ids.to(device)

    def train_loader(self, epoch: int = 0, skip: int = 0) -> SequenceBatches:
        return SequenceBatches(
            self.train_ids,
            self.batch_size,
            self.num_steps,
            self.sampling,
            self.device,
            generator=_generator(self.seed, epoch),
            skip=skip,
            rank=self.rank,
            world_size=self.world_size,
        )

    def val_loader(self) -> SequenceBatches | list:
        """The held-out stream in order, sequentially partitioned, from its first token."""
        if len(self.val_ids) == 0:
            return []
        return SequenceBatches(
            self.val_ids,
            self.val_rows,
            self.num_steps,
            "sequential",
            self.device,
            rank=self.rank,
            world_size=self.world_size,
        )

    def encode(self, text: str) -> list[int]:
        """Indices of a text (a generation prefix) cleaned and tokenized as the corpus."""
        return self.vocab[tokenize(preprocess(text), self.token)]

    def decode(self, indices: Iterable[int]) -> str:
        return detokenize(self.vocab.to_tokens(list(indices)), self.token)


class TextFileData(TextData):
    """`data=text data.path=FILE`: any plain-text file."""


def time_machine_path(root: str | Path = "data", download: bool = True) -> Path:
    """`<root>/timemachine.txt`, downloaded from the book's bucket (sha1 checked) when missing and `download`
    is true."""
    path = Path(root) / "timemachine.txt"
    if not path.is_file():
        where = f"The Time Machine not found at {path.resolve()}"
        how = (
            f"download {TIME_MACHINE_URL} (sha1 {TIME_MACHINE_SHA1}) there, or point DLRUN_DATA_DIR "
            "(paths.data_dir) at a folder that holds timemachine.txt"
        )
        if not download:
            raise DlrunError(f"{where}; {how}")
        log.info("%s: downloading %s", where, TIME_MACHINE_URL)
        try:
            fetch(TIME_MACHINE_URL, path, TIME_MACHINE_SHA1)
        except Exception as err:
            reason = first_line(err)
            raise DlrunError(f"{where}, and downloading failed ({reason}); {how}") from None
    elif sha1(path) != TIME_MACHINE_SHA1:
        log.warning("%s is not the book's copy (sha1 differs); its figures may differ", path)
    return path


class TimeMachineData(TextData):
    """H. G. Wells' The Time Machine, the book's language-model corpus: `<root>/timemachine.txt`, downloaded
    from the book's bucket when missing and `download` is true."""

    def __init__(self, root: str | Path = "data", download: bool = True, **kwargs):
        path = time_machine_path(root, download)
        super().__init__(path, **kwargs)
