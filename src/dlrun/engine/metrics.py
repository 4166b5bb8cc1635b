"""Running sums of per-batch statistics, kept on the device until someone reads them."""

import torch


class MetricSums:
    """Adds the task's per-batch sums (tensors, never synced) and the example count (a Python int)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, stats: dict[str, torch.Tensor], count: int) -> None:
        for name, value in stats.items():
            value = value.detach()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += count

    def read(self) -> tuple[dict[str, float], int]:
        """One device sync for all sums."""
        if not self.sums:
            return {}, self.count
        names = list(self.sums)
        values = torch.stack([self.sums[n].float() for n in names]).tolist()
        return dict(zip(names, values, strict=True)), self.count

    def snapshot(self) -> "MetricSums":
        """A copy that later add()s leave alone (add() replaces tensors, so sharing them is safe: no sync)."""
        copy = MetricSums()
        copy.sums, copy.count = dict(self.sums), self.count
        return copy

    def state_dict(self) -> dict:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = state["count"]
