"""BERT pretraining (book 14.10): masked-LM cross-entropy plus next-sentence cross-entropy.

The MLM loss is the mean cross-entropy over the real predictions of the batch (the padded prediction slots
have weight 0). The book computes `CrossEntropyLoss()` (a mean over every slot, padding included) and then
multiplies that scalar by the weights, so its figure is the mean over all slots, padded ones too (they
predict `<unk>` at position 0); `mlm_loss_unmasked` is that figure, logged for comparison, not trained on.
Metrics are means over the epoch's batches, weighted by batch size, as the book's accumulator.

Under DDP (each rank a shard of the global batch, gradients averaged) the training MLM mean is the global
batch's: the shards' counts of real predictions differ, so each rank divides its sum by the all-reduced
count (and multiplies by the number of ranks the gradient average divides by): two processes train as one.
Validation shards may hold different numbers of batches, so there no rank waits on another and each
shard's MLM mean is weighted by its size (close to one process's figure, not equal).
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from dlrun.tasks.base import StepResult, Task


class BertPretrainTask(Task):
    def __init__(self, monitor: str | None = "val/loss", mode: str = "min"):
        self.monitor, self.mode = monitor, mode

    def step(self, model: nn.Module, batch) -> StepResult:
        tokens, segments, valid_lens, positions, weights, labels, is_next = batch
        _, mlm_logits, nsp_logits = model(tokens, segments, valid_lens, positions)
        ce = F.cross_entropy(
            mlm_logits.float().reshape(-1, mlm_logits.shape[-1]), labels.reshape(-1), reduction="none"
        )
        w = weights.reshape(-1)
        n, ranks = len(tokens), 1
        # the global batch's real predictions and pairs (this rank's alone outside DDP training)
        total = torch.stack([w.sum(), torch.tensor(float(n), device=w.device)])
        if model.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks = dist.get_world_size()
            dist.all_reduce(total)
        mlm_sum = (ce * w).sum() / total[0].clamp(min=1)  # this rank's part of the global batch's mean
        nsp = F.cross_entropy(nsp_logits.float(), is_next)
        loss = ranks * mlm_sum + nsp  # DDP averages the ranks' gradients: the sum of the parts, times ranks
        mlm = mlm_sum.detach() * total[1]  # summed over the ranks: the global mean times the global count
        stats = {
            "loss": mlm + nsp.detach() * n,
            "mlm_loss": mlm,
            "nsp_loss": nsp.detach() * n,
            "mlm_loss_unmasked": ce.detach().mean() * n,
            "nsp_correct": (nsp_logits.argmax(1) == is_next).sum().float(),
        }
        return loss, stats, n

    @staticmethod
    def compute(sums: dict[str, float], count: int) -> dict[str, float]:
        if not count:
            return {}
        metrics = {k: v / count for k, v in sums.items() if k != "nsp_correct"}
        return metrics | {"nsp_acc": sums["nsp_correct"] / count}
