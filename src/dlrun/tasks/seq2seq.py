"""Sequence to sequence (book 9.7-10.7, `train_seq2seq`): machine translation with an encoder-decoder.

Training uses teacher forcing: the decoder reads `<bos>` and the target shifted by one. The loss is the
softmax cross-entropy of the target tokens within their valid length (`<eos>` included, padding never),
per token: summed over batches and divided by the token count at the end. (The book's printed loss divides
each sentence's sum by num_steps instead: its figure is about this one / num_steps.)

Validation reports that loss and the mean BLEU (the book's, `bleu_k`-grams) of the held-out pairs'
translations, decoded greedily (or by beam search with `beam_size` > 1) for at most `max_len` tokens
(null: the data's num_steps, as the book). At the end of training, and in mode=predict / mode=translate,
the `examples` (the book's four) or `sentences` are translated, logged with their BLEU, written to
translations.tsv in the run dir, and for attention models drawn as heatmaps in attention/.
"""

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.data.translation import tokenize
from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.tasks.base import Task
from dlrun.tasks.bleu import bleu
from dlrun.tasks.decoding import beam_search, greedy
from dlrun.tasks.heatmaps import attention_figure, render, save_png

log = logging.getLogger("dlrun")

BOOK_EXAMPLES = (
    ("go .", "va !"),
    ("i lost .", "j'ai perdu ."),
    ("he's calm .", "il est calme ."),
    ("i'm home .", "je suis chez moi ."),
)


def masked_cross_entropy(logits: Tensor, target: Tensor, valid_len: Tensor) -> tuple[Tensor, Tensor]:
    """(summed cross-entropy of the positions before valid_len, their number); logits (batch, T, vocab)."""
    positions = torch.arange(target.shape[1], device=target.device)
    mask = positions[None, :] < valid_len[:, None]
    losses = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return torch.where(mask, losses, 0.0).sum(), mask.sum()


class Seq2SeqTask(Task):
    """Batches of (src, src_len, tgt, tgt_len, index, loss_denominator) (data.translation.PairBatch); the
    model is an EncoderDecoder."""

    def __init__(
        self,
        monitor: str = "val/bleu",
        mode: str = "max",
        beam_size: int = 1,
        length_penalty: float = 0.75,
        bleu_k: int = 2,
        max_len: int | None = None,
        examples=BOOK_EXAMPLES,
        sentences: list[str] | None = None,
        attention_heatmaps: bool = True,
    ):
        if beam_size < 1 or bleu_k < 1 or (max_len is not None and max_len < 1):
            raise DlrunError(
                f"task.beam_size={beam_size}, task.bleu_k={bleu_k} and task.max_len={max_len} must be >= 1"
            )
        if isinstance(sentences, str):
            sentences = [sentences]
        self.examples = [self._example(e) for e in examples or ()]
        self.sentences = list(sentences) if sentences else None
        self.monitor, self.mode = monitor, mode
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self.bleu_k, self.max_len = bleu_k, max_len
        self.attention_heatmaps = attention_heatmaps
        self.data = None
        self.epoch = 0

    @staticmethod
    def _example(example) -> tuple[str, str]:
        if isinstance(example, str) or len(example) != 2:
            raise DlrunError(f"task.examples: {example!r} is not a [source, reference] pair")
        return str(example[0]), str(example[1])

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, model: nn.Module, ctx: FitContext) -> None:
        self.bind(ctx.data)
        if not all(hasattr(model, name) for name in ("encode", "decode")):
            raise DlrunError(
                "task=seq2seq needs an encoder-decoder (model=seq2seq, bahdanau or transformer), "
                f"not {type(model).__name__}"
            )

    def bind(self, data) -> None:
        if not all(hasattr(data, name) for name in ("src_vocab", "tgt_vocab", "encode_source")):
            raise DlrunError(f"task=seq2seq needs sentence pairs (data=fra_eng), not {type(data).__name__}")
        self.data = data
        vocab = data.tgt_vocab
        self.bos, self.eos, self.pad = vocab["<bos>"], vocab["<eos>"], vocab["<pad>"]

    def on_epoch_end(self, model: nn.Module, ctx: FitContext) -> None:
        self.epoch = ctx.epoch

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        if self.data is not None and self.examples:
            self.report(model, self.examples, ctx.run_dir, ctx.logger)

    # ---------------------------------------------------------------- steps
    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        src, src_len, tgt, tgt_len = batch[:4]
        bos = torch.full_like(tgt[:, :1], self.bos)
        logits = model(src, src_len, torch.cat([bos, tgt[:, :-1]], dim=1))
        total, tokens = masked_cross_entropy(logits, tgt, tgt_len)
        # per target token; under DDP per token of the global batch (see PairBatch.loss_denominator)
        stats = {"loss": total.detach(), "tokens": tokens.detach().float()}
        return total / batch.loss_denominator, stats, src.shape[0]

    def validation_step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        loss, stats, count = self.step(model, batch)
        src, src_len, _, _, index = batch[:5]
        translations, _ = self.translate(model, src, src_len)
        references = [self.data.val_references[i] for i in index.tolist()]
        scores = [bleu(t, r, self.bleu_k) for t, r in zip(translations, references, strict=True)]
        stats["bleu"] = torch.tensor(sum(scores), device=loss.device)
        return loss, stats, count

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        metrics = {"loss": sums["loss"] / max(sums["tokens"], 1.0)}
        if "bleu" in sums:
            metrics["bleu"] = sums["bleu"] / count
        return metrics

    # ------------------------------------------------------------ translate
    @torch.no_grad()
    def translate(self, model: nn.Module, src: Tensor, src_len: Tensor) -> tuple[list[str], list[list[int]]]:
        """Translations (strings, and ids without `<eos>`) of a batch of sources."""
        max_len = self.max_len or self.data.num_steps
        if self.beam_size == 1:
            ids = greedy(model, src, src_len, self.bos, self.eos, max_len)
        else:
            ids = [
                beam_search(
                    model,
                    src[i : i + 1],
                    src_len[i : i + 1],
                    self.bos,
                    self.eos,
                    self.pad,
                    max_len,
                    self.beam_size,
                    self.length_penalty,
                )
                for i in range(src.shape[0])
            ]
        return [self.data.decode_target(row) for row in ids], ids

    def report(self, model: nn.Module, items, out_dir: Path | None, logger=None) -> list[dict]:
        """Translate (sentence, reference or None) items; log them, their BLEU and heatmaps; write
        translations.tsv (and attention/*.png) under out_dir when given."""
        was_training = model.training
        model.eval()
        rows = []
        for i, (sentence, reference) in enumerate(items):
            src, src_len = self.data.encode_source(sentence)
            (translation,), (ids,) = self.translate(model, src, src_len)
            source = " ".join(tokenize(sentence))
            row = {"source": source, "translation": translation, "reference": None, "bleu": None}
            if reference is not None:
                row["reference"] = " ".join(tokenize(reference))
                row["bleu"] = bleu(translation, row["reference"], self.bleu_k)
            rows.append(row)
            score = f", bleu {row['bleu']:.3f}" if row["bleu"] is not None else ""
            log.info("%s => %s%s", source, translation, score)
            if self.attention_heatmaps:
                self.draw_attention(model, i, sentence, src, src_len, ids, out_dir, logger)
        model.train(was_training)
        if logger is not None:
            table = "| source | translation | reference | bleu |\n|---|---|---|---|\n" + "".join(
                f"| {r['source']} | {r['translation']} | {r['reference'] or ''} | "
                f"{'' if r['bleu'] is None else format(r['bleu'], '.3f')} |\n"
                for r in rows
            )
            logger.log_text("translations", table, self.epoch)
            scored = {f"translation/bleu_{i}": r["bleu"] for i, r in enumerate(rows) if r["bleu"] is not None}
            if scored:
                logger.log_metrics(scored, step=self.epoch)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / "translations.tsv"
            lines = ["source\ttranslation\treference\tbleu"] + [
                f"{r['source']}\t{r['translation']}\t{r['reference'] or ''}\t"
                f"{'' if r['bleu'] is None else format(r['bleu'], '.4f')}"
                for r in rows
            ]
            path.write_text("\n".join(lines) + "\n")
            log.info("translations written to %s", path)
        return rows

    def draw_attention(self, model, i: int, sentence: str, src, src_len, ids, out_dir, logger) -> None:
        """Rerun the decoder on its own output (teacher forcing, eval mode: the same computation as
        decoding) to read the attention weights of every output step."""
        max_len = self.max_len or self.data.num_steps
        outputs = ids + ([self.eos] if len(ids) < max_len else [])
        if not outputs:
            return
        decoder_in = torch.tensor([[self.bos, *outputs[:-1]]], device=src.device)
        with torch.no_grad():
            model(src, src_len, decoder_in)
        weights = getattr(model, "attention_weights", None)
        if not weights:
            return
        source = self.data.source_tokens(sentence)
        produced = self.data.tgt_vocab.to_tokens(outputs)
        inputs = self.data.tgt_vocab.to_tokens([self.bos, *outputs[:-1]])
        axes = {
            "encoder": (source, source),
            "decoder_self": (produced, inputs),
            "decoder_cross": (produced, source),
            "decoder": (produced, source),
        }
        for kind, maps in weights.items():
            rows, columns = axes.get(kind, (produced, source))
            title = f"{kind} attention: {' '.join(source)}"
            image = render(attention_figure([m[0] for m in maps], rows, columns, title))
            if out_dir is not None:
                save_png(image, out_dir / "attention" / f"{i}_{kind}.png")
            if logger is not None:
                logger.log_image(f"attention/{i}_{kind}", image, self.epoch)

    def predict(self, model: nn.Module, data, run_dir: str | Path) -> list[dict]:
        """mode=predict / mode=translate: `sentences` (else the examples, with their BLEU) translated,
        logged and written to run_dir/translations.tsv."""
        self.bind(data)
        items = [(s, None) for s in self.sentences] if self.sentences else self.examples
        if not items:
            raise DlrunError("nothing to translate: set task.sentences=['a sentence', ...]")
        return self.report(model, items, Path(run_dir))
