"""Next-token language modelling (book ch. 8-9, `train_ch8`): mean token cross-entropy, perplexity, samples.

The task holds the recurrent state between batches. With sequential partitioning (the data module's
`sampling`) row b of a batch continues row b of the previous one: the state is carried over, detached so
gradients stop at the batch start. With random sampling every batch starts from a fresh state. Each
training epoch and each validation pass start from a fresh state. Validation follows the training policy.
"""

import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.models.rnn import detach_state
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


class LanguageModelTask(Task):
    """Batches of (X, Y) token ids (batch, steps); the model maps (X, state) to (logits, state)."""

    def __init__(
        self,
        monitor: str = "val/ppl",
        mode: str = "min",
        prefixes: list[str] | tuple[str, ...] = ("time traveller", "traveller"),
        num_preds: int = 50,
        sample_every_n_epochs: int = 10,
    ):
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        if not prefixes or any(not str(p).strip() for p in prefixes):
            raise DlrunError(f"task.prefixes={list(prefixes)!r}: give one or more non-empty texts")
        if num_preds < 0:
            raise DlrunError(f"task.num_preds={num_preds} must be >= 0")
        self.monitor, self.mode = monitor, mode
        self.prefixes = [str(p) for p in prefixes]
        self.num_preds = num_preds
        self.sample_every = sample_every_n_epochs
        self.data = None  # what encodes and decodes text (the data module), set by on_fit_start / predict
        self.carry_state = True
        self.state = None
        self.epoch = 0

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, model: nn.Module, ctx: FitContext) -> None:
        data = ctx.data
        if not all(hasattr(data, name) for name in ("vocab", "encode", "decode")):
            raise DlrunError(
                "task=language_model needs text data (data=timemachine or data=text), "
                f"not {type(data).__name__}"
            )
        self.data = data
        self.carry_state = getattr(data, "sampling", "sequential") == "sequential"
        self.state = None

    def on_train_epoch_start(self, model: nn.Module, ctx: FitContext) -> None:
        self.state = None

    def on_validation_start(self, model: nn.Module, ctx: FitContext) -> None:
        self.state = None

    def on_epoch_end(self, model: nn.Module, ctx: FitContext) -> None:
        epoch, logger = ctx.epoch, ctx.logger
        self.epoch = epoch
        if self.data is None or self.sample_every < 1 or epoch % self.sample_every:
            return
        text = self.generate(model, self.prefixes[0])
        logger.log_text("sample", text, epoch)
        log.info("sample (epoch %d): %s", epoch, text)

    def on_fit_end(self, model: nn.Module, ctx: FitContext) -> None:
        logger = ctx.logger
        if self.data is None:
            return
        for i, prefix in enumerate(self.prefixes):
            text = self.generate(model, prefix)
            logger.log_text(f"final_sample/{i}", text, self.epoch)
            log.info("sample: %s", text)

    # ---------------------------------------------------------------- steps
    def step(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor], int]:
        x, y = batch
        state = self.state if self.carry_state else None
        if state is not None and (state[0] if isinstance(state, tuple) else state).shape[1] != x.shape[0]:
            state = None  # another batch size (a short last batch, another rank layout): start afresh
        logits, state = model(x, state)
        self.state = detach_state(state) if self.carry_state else None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        n = y.numel()
        return loss, {"loss": loss.detach() * n}, n

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if count == 0:
            return {}
        loss = sums["loss"] / count
        return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else math.inf}

    # ----------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, model: nn.Module, prefix: str, num_preds: int | None = None, data=None) -> str:
        """The book's `predict_ch8`: warm the state up on the prefix one token at a time, then append the
        most likely next token `num_preds` times (greedy, so samples are reproducible)."""
        data = data or self.data
        num_preds = self.num_preds if num_preds is None else num_preds
        ids = data.encode(prefix)
        if not ids:
            raise DlrunError(f"prefix {prefix!r} has no tokens after preprocessing (letters only)")
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        outputs = list(ids)
        state = model.begin_state(1, device)
        for token in ids[:-1]:  # one at a time, as the book (a bidirectional model sees no further)
            _, state = model(torch.tensor([[token]], device=device), state)
        for _ in range(num_preds):
            logits, state = model(torch.tensor([[outputs[-1]]], device=device), state)
            outputs.append(int(logits[0, -1].argmax()))
        model.train(was_training)
        return data.decode(outputs)

    def predict(self, model: nn.Module, data, run_dir: str | Path) -> list[str]:
        """mode=predict: a sample per prefix, logged and written to run_dir/samples.txt."""
        samples = [self.generate(model, prefix, data=data) for prefix in self.prefixes]
        for text in samples:
            log.info("sample: %s", text)
        path = Path(run_dir) / "samples.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{text}\n" for text in samples))
        log.info("samples written to %s", path)
        return samples
