import torch
from torch import nn


class Ensemble(nn.Module):
    """The mean of several models' outputs (K-fold models predicting together)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, *inputs):
        return torch.stack([member(*inputs) for member in self.members]).mean(dim=0)
