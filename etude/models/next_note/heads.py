"""Timing heads of a next-note network: step and duration from its last hidden layer.

Two kinds: the documents' regression (one value each, trained with MSE and positive pressure; it
learns the conditional mean, so sampled timing collapses towards it), and a categorical over
log-spaced bins, drawn from at generation time (a value uniform within the drawn bin), which keeps
the data's spread.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, model_validator
from torch import nn

from etude.params import Strict


class TimingBins(Strict):
    """Log-spaced bins of seconds: [0, min_s), then `count - 1` bins up to max_s; longer values fall
    in the last."""

    count: Annotated[int, Field(ge=2)]
    min_s: PositiveFloat
    max_s: PositiveFloat
    soft_label_width: Annotated[
        float, Field(ge=0)
    ]  # σ, in bins, of the Gaussian training target; 0: one-hot

    @model_validator(mode="after")
    def _ordered(self):
        if self.max_s <= self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be above min_s ({self.min_s})")
        return self


def timing_edges(bins: TimingBins) -> torch.Tensor:
    """(count + 1,) bin edges in seconds: 0, then log-spaced from min_s to max_s."""
    return torch.cat(
        [torch.zeros(1), torch.logspace(math.log10(bins.min_s), math.log10(bins.max_s), bins.count)]
    )


def timing_bin(seconds: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """The bin of each value; values past the last edge fall in the last bin."""
    return torch.bucketize(seconds.contiguous(), edges[1:-1], right=True)


def soft_labels(count: int, width: float) -> torch.Tensor:
    """(count, count): row i is the training target for bin i, a Gaussian over bin indices centred
    on i (the identity for width 0). Bins are ordered: a neighbouring bin is a near miss, not a
    wrong class, and one-hot targets teach the heads a confidence that held-out timing does not bear
    out."""
    if width == 0:
        return torch.eye(count)
    index = torch.arange(count, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((index[:, None] - index[None, :]) / width) ** 2)
    return (kernel / kernel.sum(1, keepdim=True)).float()


def draw_class(
    logits: torch.Tensor, temperatures: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """One class per row by inverse-CDF sampling: one uniform number per row. torch.multinomial
    draws one per class, which made it 60 % of a sampling step at batch 256."""
    cdf = torch.softmax(logits / temperatures[:, None], dim=-1).cumsum(dim=-1)
    u = torch.rand(len(cdf), 1, generator=generator, device=cdf.device)
    return (cdf < u).sum(dim=-1).clamp(max=cdf.shape[-1] - 1)


def positive_pressure_mse(
    pred: torch.Tensor, target: torch.Tensor, pressure: float
) -> torch.Tensor:
    """MSE plus a penalty on negative outputs: steps and durations cannot be negative."""
    return ((target - pred) ** 2 + pressure * torch.clamp(-pred, min=0)).mean()


class MseTimingHeads(nn.Module):
    """The documents' regression: one value of seconds each for step and duration."""

    def __init__(self, width: int, pressure: float):
        super().__init__()
        self.pressure = pressure
        self.step, self.duration = nn.Linear(width, 1), nn.Linear(width, 1)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(…,) seconds."""
        return self.step(hidden).squeeze(-1), self.duration(hidden).squeeze(-1)

    def loss(self, output: torch.Tensor, seconds: torch.Tensor) -> torch.Tensor:
        return positive_pressure_mse(output, seconds, self.pressure)

    def draw(
        self, output: torch.Tensor, temperatures: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """(B,) seconds: the regression's value, which no temperature spreads."""
        return output.clamp(min=0)

    def point(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(median, mean) of each prediction: the one value a regression has."""
        return output, output


class BinnedTimingHeads(nn.Module):
    """A categorical over `TimingBins` each for step and duration, trained on soft labels."""

    def __init__(self, width: int, bins: TimingBins):
        super().__init__()
        self.step, self.duration = nn.Linear(width, bins.count), nn.Linear(width, bins.count)
        self.register_buffer("edges", timing_edges(bins), persistent=False)
        self.register_buffer(
            "targets", soft_labels(bins.count, bins.soft_label_width), persistent=False
        )

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(…, bins) logits."""
        return self.step(hidden), self.duration(hidden)

    def loss(self, output: torch.Tensor, seconds: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, self.targets[timing_bin(seconds, self.edges)])

    def draw(
        self, output: torch.Tensor, temperatures: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """(B,) seconds: a bin drawn at each row's temperature and a uniform point within it."""
        index = draw_class(output, temperatures, generator)
        low, high = self.edges[index], self.edges[index + 1]
        return low + (high - low) * torch.rand(
            len(index), generator=generator, device=output.device
        )

    def point(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(median, mean) of each prediction in seconds: the best answers under MAE and under
        RMSE."""
        probs = torch.softmax(output.double(), dim=-1)
        edges = self.edges.double()
        mean = (probs * (edges[:-1] + edges[1:]) / 2).sum(-1)
        cdf = probs.cumsum(-1)
        index = (cdf < 0.5).sum(-1).clamp(max=probs.shape[-1] - 1)
        below = (cdf.gather(-1, index[..., None]) - probs.gather(-1, index[..., None]))[..., 0]
        within = ((0.5 - below) / probs.gather(-1, index[..., None])[..., 0]).clamp(0, 1)
        median = edges[index] + within * (edges[index + 1] - edges[index])
        return median, mean


TimingHeads = MseTimingHeads | BinnedTimingHeads


def timing_heads(config, width: int) -> TimingHeads:
    """The heads a next-note configuration asks for (`timing_head`, `timing_bins`,
    `positive_pressure`)."""
    if config.timing_head == "mse":
        return MseTimingHeads(width, config.positive_pressure)
    return BinnedTimingHeads(width, config.timing_bins)
