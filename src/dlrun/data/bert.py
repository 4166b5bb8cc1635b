"""BERT pretraining pairs (book 14.8-14.9): next-sentence prediction and masked language modelling.

From paragraphs (lists of sentences, each a list of words), as the book's `_WikiTextDataset`:
- a vocabulary of the words seen at least `min_freq` times and the reserved `<pad> <mask> <cls> <sep>`;
- for each pair of consecutive sentences: half the time the second is replaced by a random sentence of a
  random paragraph (is_next false); pairs longer than max_len with `<cls>` and two `<sep>` are dropped;
- 15% of the tokens (not `<cls>`/`<sep>`; at least one) are predicted: 80% become `<mask>`, 10% a random
  word, 10% stay; at most round(0.15 · max_len) per pair;
- padded to max_len; the prediction slots padded with position 0, label 0 and weight 0.

The draws (paragraph order, random next sentences, masks) come from the seed once, as the book draws them
once; each epoch's order comes from (seed, epoch). Sources: the book's WikiText-2 (`data=wikitext2`), the
Penn Treebank's sentences grouped into paragraphs (`data=ptb_bert`, what runs offline here) or any text
whose paragraphs are separated by blank lines (`data=paragraphs data.path=...`).
"""

import logging
import random
import re
import zipfile
from pathlib import Path
from typing import Annotated

import torch

from dlrun.data.base import DataModule
from dlrun.data.download import download as fetch
from dlrun.data.text import Vocab, time_machine_path
from dlrun.errors import DlrunError, first_line
from dlrun.ranges import BatchSize, Max, Min

log = logging.getLogger("dlrun")

WIKITEXT2_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"
WIKITEXT2_SHA1 = "3c914d17d80b1459be871a5039ac23e752a53cbe"
RESERVED = ("<pad>", "<mask>", "<cls>", "<sep>")

Paragraph = list[list[str]]


def read_wiki(path: Path) -> list[Paragraph]:
    """The book's _read_wiki: a line with at least one ' . ' is a paragraph, lower-cased, cut into
    sentences at ' . ', each split on spaces (the book then shuffles them; here the draws do)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        [s.split() for s in line.strip().lower().split(" . ")]
        for line in lines
        if len(line.split(" . ")) >= 2
    ]


def read_ptb_paragraphs(path: Path, sentences_per_paragraph: int) -> list[Paragraph]:
    """PTB has one sentence per line and no paragraphs: every `sentences_per_paragraph` consecutive lines
    make one."""
    sentences = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.split()]
    n = sentences_per_paragraph
    return [sentences[i : i + n] for i in range(0, len(sentences) - 1, n) if len(sentences[i : i + n]) >= 2]


SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?]['\"]))\s+")  # after . ! ? and an optional closing quote
# words keep inner apostrophes (don't), a dash (--) is one mark, quotes and other marks stand alone
WORD_OR_MARK = re.compile(r"\w+(?:'\w+)*|-+|[^\w\s]")


def read_text_paragraphs(path: Path) -> list[Paragraph]:
    """Paragraphs are separated by blank lines (a paragraph's hard-wrapped lines are joined); sentences end at
    . ! or ? (and a closing quote); lower-cased words and punctuation marks."""
    text = path.read_text(encoding="utf-8").lower()
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        sentences = [WORD_OR_MARK.findall(s) for s in SENTENCE_END.split(block.strip())]
        paragraphs.append([s for s in sentences if s])
    return paragraphs


def tokens_and_segments(
    tokens_a: list[str], tokens_b: list[str] | None = None
) -> tuple[list[str], list[int]]:
    """The book's get_tokens_and_segments: <cls> a <sep> (b <sep>), segments 0 then 1."""
    tokens = ["<cls>", *tokens_a, "<sep>"]
    segments = [0] * len(tokens)
    if tokens_b is not None:
        tokens += [*tokens_b, "<sep>"]
        segments += [1] * (len(tokens_b) + 1)
    return tokens, segments


def nsp_pairs(paragraphs: list[Paragraph], max_len: int, rng: random.Random) -> list[tuple]:
    """(tokens, segments, is_next) for each consecutive pair of each paragraph that fits max_len."""
    pairs = []
    for paragraph in paragraphs:
        for i in range(len(paragraph) - 1):
            a, b, is_next = paragraph[i], paragraph[i + 1], True
            if rng.random() >= 0.5:
                b, is_next = rng.choice(rng.choice(paragraphs)), False
            if len(a) + len(b) + 3 > max_len:
                continue
            tokens, segments = tokens_and_segments(a, b)
            pairs.append((tokens, segments, is_next))
    return pairs


def mask_tokens(
    tokens: list[str], vocab: Vocab, rng: random.Random
) -> tuple[list[int], list[int], list[int]]:
    """The book's _get_mlm_data_from_tokens: (input ids, predicted positions in order, their labels)."""
    candidates = [i for i, t in enumerate(tokens) if t not in ("<cls>", "<sep>")]
    rng.shuffle(candidates)
    num_preds = max(1, round(len(tokens) * 0.15))
    inputs = list(tokens)
    chosen = []
    for position in candidates[:num_preds]:
        if rng.random() < 0.8:
            inputs[position] = "<mask>"
        elif rng.random() >= 0.5:
            inputs[position] = rng.choice(vocab.idx_to_token)
        chosen.append(position)
    chosen.sort()
    return vocab[inputs], chosen, vocab[[tokens[p] for p in chosen]]


class BertExamples:
    """Padded tensors of every example: token ids, segments, valid lengths, predicted positions, their
    weights (1: a real prediction, 0: padding) and labels, and the NSP labels (1: is next)."""

    def __init__(self, paragraphs: list[Paragraph], vocab: Vocab, max_len: int, rng: random.Random):
        rng.shuffle(paragraphs := list(paragraphs))
        pairs = nsp_pairs(paragraphs, max_len, rng)
        num_slots, pad = round(max_len * 0.15), vocab["<pad>"]
        rows = {name: [] for name in ("tokens", "segments", "positions", "weights", "labels")}
        for tokens, segments, _ in pairs:
            ids, positions, labels = mask_tokens(tokens, vocab, rng)
            short = num_slots - len(positions)
            rows["tokens"].append(ids + [pad] * (max_len - len(ids)))
            rows["segments"].append(segments + [0] * (max_len - len(segments)))
            rows["positions"].append(positions + [0] * short)
            rows["weights"].append([1.0] * len(positions) + [0.0] * short)
            rows["labels"].append(labels + [0] * short)
        self.tokens = torch.tensor(rows["tokens"], dtype=torch.long).reshape(-1, max_len)
        self.segments = torch.tensor(rows["segments"], dtype=torch.long).reshape(-1, max_len)
        self.valid_lens = torch.tensor([len(tokens) for tokens, _, _ in pairs], dtype=torch.long)
        self.positions = torch.tensor(rows["positions"], dtype=torch.long).reshape(-1, num_slots)
        self.weights = torch.tensor(rows["weights"]).reshape(-1, num_slots)
        self.labels = torch.tensor(rows["labels"], dtype=torch.long).reshape(-1, num_slots)
        self.is_next = torch.tensor([int(is_next) for _, _, is_next in pairs], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple:
        fields = (self.tokens, self.segments, self.valid_lens, self.positions, self.weights, self.labels)
        return tuple(t[index].to(device) for t in (*fields, self.is_next))


class BertPretrainData(DataModule):
    """Pairs for BERT pretraining from training (and optional held-out) paragraphs; subclasses read them."""

    def __init__(
        self,
        train: list[Paragraph],
        val: list[Paragraph] | None = None,
        batch_size: BatchSize = 512,
        max_len: Annotated[int, Min(5)] = 64,
        min_freq: Annotated[int, Min(1)] = 5,
        source: str = "text",
    ):
        super().__init__(batch_size)
        if max_len < 5 or min_freq < 1:  # the config check reads these only where a subclass names them
            raise DlrunError(f"data.max_len={max_len} must be >= 5 and data.min_freq={min_freq} >= 1")
        self.train_paragraphs = [p for p in train if len(p) >= 2]
        self.val_paragraphs = [p for p in val or [] if len(p) >= 2]
        if not self.train_paragraphs:
            raise DlrunError(
                f"{source} has no paragraph of two or more sentences: next-sentence prediction needs them "
                "(separate paragraphs by blank lines and end sentences with . ! or ?)"
            )
        self.max_len = max_len
        self.vocab = Vocab(
            [w for p in self.train_paragraphs for s in p for w in s],
            min_freq=min_freq,
            reserved_tokens=RESERVED,
        )
        self.model_kwargs = {"vocab_size": len(self.vocab)}
        self.train_examples: BertExamples | None = None
        self.val_examples: BertExamples | None = None
        log.info(
            "%s: %d paragraphs for training, %d held out; vocab %d (min_freq %d)",
            source,
            len(self.train_paragraphs),
            len(self.val_paragraphs),
            len(self.vocab),
            min_freq,
        )

    def checkpoint_state(self) -> dict:
        return {"vocab": list(self.vocab.idx_to_token)}

    def setup(self, device: torch.device, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().setup(device, seed, rank, world_size)
        if self.train_examples is None:
            self.train_examples = BertExamples(
                self.train_paragraphs, self.vocab, self.max_len, random.Random(seed)
            )
            self.val_examples = BertExamples(
                self.val_paragraphs, self.vocab, self.max_len, random.Random(seed + 1)
            )
            if len(self.train_examples) == 0:
                raise DlrunError(f"no sentence pair fits data.max_len={self.max_len}; raise it")
            log.info("%d training pairs, %d held out", len(self.train_examples), len(self.val_examples))

    def train_loader(self, epoch: int = 0, skip: int = 0):
        examples = self.train_examples
        sampler = self.train_sampler(len(examples), epoch, skip)
        return Batches(sampler, examples, self.device)

    def val_loader(self):
        if not self.val_examples:
            return []
        return Batches(self.val_sampler(len(self.val_examples)), self.val_examples, self.device)


class Batches:
    def __init__(self, sampler, examples: BertExamples, device: torch.device):
        self.sampler, self.examples, self.device = sampler, examples, device

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler:
            yield self.examples.batch(index, self.device)


def require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DlrunError(f"{what} not found at {path.resolve()}")
    return path


class WikiText2Data(BertPretrainData):
    """The book's WikiText-2: `<root>/wikitext-2/wiki.{train,valid}.tokens`, downloaded (sha1 checked) and
    unpacked when missing and `download` is true."""

    def __init__(self, root: str | Path = "data", download: bool = True, **kwargs):
        folder = Path(root) / "wikitext-2"
        if not (folder / "wiki.train.tokens").is_file():
            how = f"download {WIKITEXT2_URL} (sha1 {WIKITEXT2_SHA1}) and unpack it in {Path(root).resolve()}"
            if not download:
                raise DlrunError(f"WikiText-2 not found in {folder.resolve()}; {how}")
            archive = Path(root) / "wikitext-2-v1.zip"
            try:
                fetch(WIKITEXT2_URL, archive, WIKITEXT2_SHA1)
                with zipfile.ZipFile(archive) as z:
                    z.extractall(root)
            except Exception as err:
                raise DlrunError(
                    f"WikiText-2 not found, and downloading failed ({first_line(err)}); {how}"
                ) from None
        train = read_wiki(require(folder / "wiki.train.tokens", "WikiText-2's training file"))
        val_path = folder / "wiki.valid.tokens"
        val = read_wiki(val_path) if val_path.is_file() else []
        super().__init__(train, val, source=str(folder), **kwargs)


class PTBParagraphsData(BertPretrainData):
    """The Penn Treebank (`<root>/ptb/ptb.{train,valid}.txt`): consecutive sentences made paragraphs."""

    def __init__(
        self, root: str | Path = "data", sentences_per_paragraph: Annotated[int, Min(2)] = 5, **kwargs
    ):
        folder = Path(root) / "ptb"
        how = "unpack the book's http://d2l-data.s3-accelerate.amazonaws.com/ptb.zip there"
        train = read_ptb_paragraphs(
            require(folder / "ptb.train.txt", f"PTB ({how})"), sentences_per_paragraph
        )
        val_path = folder / "ptb.valid.txt"
        val = read_ptb_paragraphs(val_path, sentences_per_paragraph) if val_path.is_file() else []
        super().__init__(train, val, source=str(folder), **kwargs)


class TextParagraphsData(BertPretrainData):
    """Any text with paragraphs separated by blank lines; the last `val_fraction` of them held out."""

    def __init__(
        self, path: str | Path, val_fraction: Annotated[float, Min(0), Max(1, exclusive=True)] = 0.1, **kwargs
    ):
        path = Path(path)
        paragraphs = [p for p in read_text_paragraphs(require(path, "data.path")) if len(p) >= 2]
        num_val = round(len(paragraphs) * val_fraction)
        train, val = paragraphs[: len(paragraphs) - num_val], paragraphs[len(paragraphs) - num_val :]
        super().__init__(train, val, source=str(path), **kwargs)


class TimeMachineParagraphsData(TextParagraphsData):
    """The Time Machine (`<root>/timemachine.txt`, downloaded when missing and `download` is true) read as
    `data=paragraphs`: blank lines separate its paragraphs; one-line headings (chapter numbers) drop out."""

    def __init__(self, root: str | Path = "data", download: bool = True, **kwargs):
        super().__init__(time_machine_path(root, download), **kwargs)
