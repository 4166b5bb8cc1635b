"""Sentence pairs for machine translation (book 9.5 / 10.5): the English-French set, or any file with one
tab-separated `source<TAB>target` pair per line (`data.path`).

Preprocessing is the book's: narrow and non-breaking spaces become spaces, text is lowercased, and a space
goes before `, . ! ?` that follow a non-space; tokens are words. Each side gets its own vocabulary (tokens
seen at least `min_freq` times in the training pairs, with `<unk> <pad> <bos> <eos>`). Sequences end with
`<eos>` and are cut or padded with `<pad>` to `num_steps`; the valid length counts `<eos>` unless it was cut.

Splits. Training uses the file's first `num_examples` pairs, exactly the book's (whose tokenizer keeps one
more, 601 for 600: not reproduced). Validation is `num_val` pairs drawn with `seed` from the pairs that
follow, up to as many again as training: never trained on, and as short as the training ones (the file is
sorted by length). With `num_examples=null` validation is drawn from every pair and training is the rest.
"""

import logging
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from dlrun.atomic import replacing
from dlrun.data.base import DataModule
from dlrun.data.download import download, sha1
from dlrun.data.sampling import EpochBatchSampler
from dlrun.data.text import Vocab
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, OptionalBatchSize

log = logging.getLogger("dlrun")

FRA_ENG_URL = "http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip"
FRA_ENG_SHA1 = "94646ad1522d915e7b0f9296181140edcf86a4f5"  # of the zip
FRA_TXT_SHA1 = "c43f99dce27311d3afd4d3e0716848194cfcc103"  # of fra.txt inside it
SPECIALS = ("<pad>", "<bos>", "<eos>")


def preprocess(text: str) -> str:
    """The book's `preprocess_nmt`: "Go.\u202f!" -> "go . !"."""
    text = text.replace("\u202f", " ").replace("\xa0", " ").lower()
    return re.sub(r"(?<=[^ ])([,.!?])", r" \1", text)


def tokenize(text: str) -> list[str]:
    return preprocess(text).split()


def read_pairs(path: Path, limit: int | None = None, encoding: str = "utf-8") -> list[tuple[list, list]]:
    """Token lists of the first `limit` pairs (all when None); lines without two non-empty fields are
    skipped, fields after the second (the Tatoeba files' attribution) ignored."""
    if not path.is_file():
        raise DlrunError(f"sentence-pair file {path.resolve()} not found; set data.path to a file of pairs")
    try:
        lines = path.read_text(encoding=encoding).split("\n")
    except (UnicodeDecodeError, LookupError) as err:
        reason = first_line(err)
        raise DlrunError(f"{path} could not be read as {encoding} ({reason}); set data.encoding") from None
    pairs = []
    for line in lines:
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        source, target = tokenize(fields[0]), tokenize(fields[1])
        if source and target:
            pairs.append((source, target))
            if limit is not None and len(pairs) == limit:
                break
    return pairs


def to_tensor(sentences: list[list[str]], vocab: Vocab, num_steps: int) -> tuple[Tensor, Tensor]:
    """The book's `build_array_nmt`: ids + `<eos>`, cut or padded to num_steps; and the valid lengths."""
    pad, eos = vocab["<pad>"], vocab["<eos>"]
    ids = torch.full((len(sentences), num_steps), pad, dtype=torch.long)
    lengths = torch.zeros(len(sentences), dtype=torch.long)
    for i, tokens in enumerate(sentences):
        row = [*vocab[list(tokens)], eos][:num_steps]
        ids[i, : len(row)] = torch.tensor(row)
        lengths[i] = len(row)
    return ids, lengths


class PairBatch(NamedTuple):
    src: Tensor
    src_len: Tensor
    tgt: Tensor
    tgt_len: Tensor
    index: Tensor  # which pairs these are (validation looks up the reference sentences with it)
    # Target tokens of the whole global batch / number of ranks: the loss is the summed cross-entropy over
    # this, so that DDP's mean of the ranks' gradients is the gradient of the global batch's per-token mean
    # (one process: exactly this batch's token count).
    loss_denominator: Tensor


class PairBatches:
    def __init__(self, tensors: tuple[Tensor, ...], sampler: EpochBatchSampler, device: torch.device):
        self.tensors, self.sampler, self.device = tensors, sampler, device

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        tgt_len = self.tensors[3]
        for whole in self.sampler.global_batches():
            whole = whole.to(tgt_len.device)
            idx = self.sampler.share(whole)
            denominator = tgt_len[whole].sum() / self.sampler.world_size
            yield PairBatch(*(t[idx] for t in self.tensors), idx, denominator)


class TranslationData(DataModule):
    """A translation data module over one file of tab-separated pairs (splits: see the module docstring).

    `src_vocab`, `tgt_vocab`, `num_steps`, `encode_source` and `decode_target` are what the seq2seq task
    reads; `model_kwargs` gives the model both vocabulary sizes."""

    def __init__(
        self,
        path: str | Path,
        batch_size: BatchSize = 64,
        num_steps: int = 10,
        num_examples: int | None = 600,
        num_val: int = 100,
        min_freq: int = 2,
        seed: int = 0,
        val_batch_size: OptionalBatchSize = None,
        encoding: str = "utf-8",
    ):
        if batch_size < 1 or num_steps < 2:
            raise DlrunError(f"data.batch_size={batch_size} must be >= 1 and data.num_steps={num_steps} >= 2")
        if num_examples is not None and num_examples < 1:
            raise DlrunError(f"data.num_examples={num_examples} must be >= 1 (or null for every pair)")
        if num_val < 0:
            raise DlrunError(f"data.num_val={num_val} must be >= 0")
        super().__init__(batch_size, val_batch_size)
        self.path = Path(path)
        self.num_steps = num_steps

        pool_size = None if num_examples is None else 2 * num_examples
        pairs = read_pairs(self.path, pool_size, encoding)
        train, val = self.split(pairs, num_examples, num_val, seed)
        if not train:
            raise DlrunError(f"{self.path}: no training pairs (is it tab-separated, source<TAB>target?)")
        if num_val and not val:
            raise DlrunError(
                f"{self.path} has no pairs after the first data.num_examples={num_examples} to validate on; "
                "lower data.num_examples or set data.num_val=0 (with task.monitor=train/loss task.mode=min)"
            )
        self.train_pairs, self.val_pairs = train, val
        self.src_vocab = Vocab([w for source, _ in train for w in source], min_freq, SPECIALS)
        self.tgt_vocab = Vocab([w for _, target in train for w in target], min_freq, SPECIALS)
        self.train_tensors = self.tensors(train)
        self.val_tensors = self.tensors(val)
        self.val_references = [" ".join(t) for _, t in val]
        self.model_kwargs = {"src_vocab_size": len(self.src_vocab), "tgt_vocab_size": len(self.tgt_vocab)}
        log.info(
            "%s: %d training pairs, %d held out; vocabularies: %d source, %d target tokens",
            self.path.name,
            len(train),
            len(val),
            len(self.src_vocab),
            len(self.tgt_vocab),
        )

    @staticmethod
    def split(pairs: list, num_examples: int | None, num_val: int, seed: int) -> tuple[list, list]:
        generator = torch.Generator().manual_seed(seed)
        if num_examples is None:
            order = torch.randperm(len(pairs), generator=generator).tolist()
            held_out = set(order[:num_val])
            val = [pairs[i] for i in sorted(held_out)]
            return [p for i, p in enumerate(pairs) if i not in held_out], val
        rest = pairs[num_examples:]
        picked = sorted(torch.randperm(len(rest), generator=generator)[:num_val].tolist())
        return pairs[:num_examples], [rest[i] for i in picked]

    def tensors(self, pairs: list) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        src, src_len = to_tensor([s for s, _ in pairs], self.src_vocab, self.num_steps)
        tgt, tgt_len = to_tensor([t for _, t in pairs], self.tgt_vocab, self.num_steps)
        return src, src_len, tgt, tgt_len

    def checkpoint_state(self) -> dict:
        """Saved in every checkpoint, so that translate mode can check it rebuilt the same vocabularies."""
        return {"src_vocab": self.src_vocab.idx_to_token[:], "tgt_vocab": self.tgt_vocab.idx_to_token[:]}

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        # `seed` (the run's) orders the batches; the split was drawn with data.seed.
        super().setup(device, seed, rank, world_size)
        # Token ids are small: keep them on the device and batch there.
        self.train_tensors = tuple(t.to(device) for t in self.train_tensors)
        self.val_tensors = tuple(t.to(device) for t in self.val_tensors)

    def train_loader(self, epoch: int = 0, skip: int = 0) -> PairBatches:
        return PairBatches(
            self.train_tensors, self.train_sampler(len(self.train_pairs), epoch, skip), self.device
        )

    def val_loader(self) -> PairBatches:
        return PairBatches(self.val_tensors, self.val_sampler(len(self.val_pairs)), self.device)

    # ------------------------------------------------------------ text <-> ids
    def encode_source(self, sentence: str) -> tuple[Tensor, Tensor]:
        """One sentence, preprocessed as the pairs, as a (1, num_steps) batch and its (1,) valid length."""
        tokens = tokenize(sentence)
        if not tokens:
            raise DlrunError(f"sentence {sentence!r} has no words to translate")
        ids, length = to_tensor([tokens], self.src_vocab, self.num_steps)
        return ids.to(self.device), length.to(self.device)

    def source_tokens(self, sentence: str) -> list[str]:
        """What the model sees of a sentence: its known tokens (or `<unk>`), `<eos>`, cut to num_steps."""
        ids, length = self.encode_source(sentence)
        return self.src_vocab.to_tokens(ids[0, : int(length[0])].tolist())

    def decode_target(self, ids: list[int]) -> str:
        return " ".join(self.tgt_vocab.to_tokens(list(ids)))


class FraEngData(TranslationData):
    """The book's English-French pairs: `<root>/fra-eng/fra.txt`, downloaded (the book's zip, sha1 checked)
    when missing and `download` is true. `path` reads another file of pairs instead."""

    def __init__(self, root: str | Path = "data", download: bool = True, path: str | None = None, **kwargs):
        if path is None:
            path = Path(root) / "fra-eng" / "fra.txt"
            if not path.is_file():
                fetch_fra_eng(path, download)
            elif sha1(path) != FRA_TXT_SHA1:
                log.warning("%s is not the book's copy (sha1 differs); its figures may differ", path)
        super().__init__(path, **kwargs)


def fetch_fra_eng(path: Path, allowed: bool) -> None:
    where = f"English-French pairs not found at {path.resolve()}"
    how = (
        f"download {FRA_ENG_URL} (sha1 {FRA_ENG_SHA1}) and unzip it in {path.parent.parent.resolve()}, "
        "point DLRUN_DATA_DIR (paths.data_dir) at a folder that holds fra-eng/fra.txt, "
        "or set data.path to a file of tab-separated pairs"
    )
    if not allowed:
        raise DlrunError(f"{where}; {how}")
    log.info("%s: downloading %s", where, FRA_ENG_URL)
    archive = path.parent.parent / "fra-eng.zip"
    try:
        download(FRA_ENG_URL, archive, FRA_ENG_SHA1)
        # into a temp file first: under torchrun every rank may be downloading at once
        with replacing(path) as tmp, zipfile.ZipFile(archive) as zf:
            tmp.write_bytes(zf.read("fra-eng/fra.txt"))
    except Exception as err:
        raise DlrunError(f"{where}, and downloading failed ({first_line(err)}); {how}") from None
