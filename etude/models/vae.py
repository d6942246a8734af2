"""What every VAE family shares: the settings, the KL term and its schedule, the latent-usage
statistics, and the hooks over a representation whose examples a split indexes (`VaeFamily`).

A VAE family subclasses `VaeFamily` and brings its network (called as `model(x) -> (output, mu,
logvar)`, with `encode` and `decode`), the reconstruction terms of its loss and their weights, and
its evaluation and samples.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, ClassVar, Protocol

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from etude.batches import evaluation_batches, shuffled_batches
from etude.diagnosis import Remedy, scaled
from etude.family import Family, Representation
from etude.params import Strict

Batch = tuple[torch.Tensor]  # one tensor of examples (B, ...)


class KlSchedule(Strict):
    beta: NonNegativeFloat  # weight once annealed
    start_epoch: NonNegativeInt  # weight 0 before this epoch
    anneal_epochs: NonNegativeInt  # linear 0 -> beta over this many epochs (0: beta at once)
    cyclical: bool  # restart the ramp every anneal_epochs (Fu et al. 2019)
    free_bits: NonNegativeFloat  # nats per latent dimension below which KL is not penalised


class VaeConfig(Strict):
    """The settings every VAE family has."""

    latent_dim: PositiveInt
    dropout: Annotated[float, Field(ge=0, lt=1)]
    batchnorm_momentum: Annotated[float, Field(gt=0, le=1)]
    kl: KlSchedule
    val_batch_size: PositiveInt
    active_unit_threshold: PositiveFloat  # Var_x(mu_j) above this: dimension j is in use


class Examples(Representation, Protocol):
    """A representation whose examples (windows, segments) each split indexes."""

    def split_index(self, split: str) -> np.ndarray:
        """The indices of `split`'s examples."""


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B, latent) KL(q(z|x) || N(0, I)) per dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def kl_term(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Batch KL summed over dimensions; free bits: no pressure on a dimension whose batch-mean KL
    is below the floor."""
    return torch.clamp(kl_per_dim(mu, logvar).mean(0), min=free_bits).sum()


def kl_weight(kl, epoch: int | None) -> float:
    """KL weight at `epoch` under the KlSchedule `kl`; None: the weight once the schedule is
    done."""
    if epoch is None:
        return kl.beta
    if epoch < kl.start_epoch:
        return 0.0
    if kl.anneal_epochs == 0:
        return kl.beta
    progress = epoch - kl.start_epoch
    if kl.cyclical:
        progress %= kl.anneal_epochs
    return kl.beta * min(1.0, progress / kl.anneal_epochs)


def latent_stats(mu: np.ndarray, logvar: np.ndarray, active_threshold: float) -> dict[str, float]:
    """KL in total and per dimension, and active units: dimensions whose Var_x(mu) exceeds the
    threshold."""
    kl = kl_per_dim(torch.from_numpy(mu), torch.from_numpy(logvar)).mean(0).numpy()
    variance = mu.var(axis=0, ddof=1) if len(mu) > 1 else np.zeros(mu.shape[1])
    return {
        "kl": float(kl.sum()),
        "active_units": float((variance > active_threshold).sum()),
        **{f"kl_dim_{j}": float(v) for j, v in enumerate(kl)},
    }


@torch.no_grad()
def encode_decode(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
    output: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[np.ndarray, ...]:
    """Inputs, outputs decoded from z = mu (`output` maps the forward pass's first result to data
    space), mu and logvar over a split, as numpy arrays."""
    model.eval()
    xs, outs, mus, logvars = [], [], [], []
    for (x,) in batches:
        raw, mu, logvar = model(x)
        (
            xs.append(x.cpu()),
            outs.append(output(raw).cpu()),
            mus.append(mu.cpu()),
            logvars.append(logvar.cpu()),
        )
    return tuple(torch.cat(t).numpy() for t in (xs, outs, mus, logvars))


def collapse_warning(epoch: int, message: str) -> None:
    """A pathology seen during training, printed as it shows; the verdicts judge the whole run."""
    print(f"WARNING: epoch {epoch + 1}: {message}", flush=True)


class VaeFamily(Family):
    """The hooks every VAE family shares: batches of examples by split, the loss as reconstruction
    terms plus the scheduled KL term, and dropout as the remedy for overfitting."""

    @abstractmethod
    def batch(self, data: Examples, index: np.ndarray, device: torch.device) -> Batch:
        """The examples at `index` as the network's input."""

    @abstractmethod
    def reconstruction(
        self, model, x: torch.Tensor, output: torch.Tensor, config
    ) -> dict[str, torch.Tensor]:
        """The reconstruction terms of the loss, each (B,): one value per example."""

    @abstractmethod
    def loss_weights(self, model, config, epoch: int | None) -> dict[str, float]:
        """Each loss term's weight at `epoch` (None: every schedule done), `kl` included."""

    def split_size(self, data: Examples, config, split: str) -> int:
        return len(data.split_index(split))

    def train_batches(
        self, data: Examples, config, epoch: int, device: torch.device
    ) -> Iterator[Batch]:
        for index in shuffled_batches(
            data.split_index("train"),
            config.seed,
            epoch,
            config.samples_per_epoch,
            config.batch_size,
        ):
            yield self.batch(data, index, device)

    def eval_batches(
        self, data: Examples, config, split: str, limit: int | None, device: torch.device
    ) -> Iterator[Batch]:
        what, _ = self.example(config)
        for index in evaluation_batches(
            data.split_index(split), limit, config.val_batch_size, split, what
        ):
            yield self.batch(data, index, device)

    def loss(
        self, model, batch: Batch, config, epoch: int | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        (x,) = batch
        output, mu, logvar = model(x)
        terms = self.reconstruction(model, x, output, config)
        terms["kl"] = kl_term(mu, logvar, config.kl.free_bits).expand(len(x))
        terms = {k: v.mean() for k, v in terms.items()}
        weights = self.loss_weights(model, config, epoch)
        return sum(weights[k] * v for k, v in terms.items()), terms

    # Remedies of both VAEs' pathologies, by the names diagnosis.ladders uses.
    remedies: ClassVar[dict[str, Remedy]] = {
        "slower_kl": Remedy(
            "slower KL annealing",
            lambda c, r, v: {
                "kl.anneal_epochs": max(
                    round(r.anneal_factor * c.kl.anneal_epochs), r.anneal_min_epochs
                )
            },
        ),
        "smaller_beta": Remedy(
            "a smaller beta: the decoder then reads z",
            lambda c, r, v: {"kl.beta": scaled(c.kl.beta, r.beta_down)},
        ),
        "free_bits": Remedy(
            "free bits: each latent dimension keeps some KL",
            lambda c, r, v: {"kl.free_bits": c.kl.free_bits + r.free_bits_step},
        ),
        "larger_beta": Remedy(
            "a larger beta draws the posterior to the prior",
            lambda c, r, v: {"kl.beta": scaled(c.kl.beta, r.beta_up)},
        ),
    }
