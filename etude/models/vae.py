"""What every VAE family shares: the KL term, its schedule, and the latent-usage statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from pydantic import NonNegativeFloat, NonNegativeInt

from etude.params import Strict


class KlSchedule(Strict):
    beta: NonNegativeFloat           # weight once annealed
    start_epoch: NonNegativeInt      # weight 0 before this epoch
    anneal_epochs: NonNegativeInt    # linear 0 -> beta over this many epochs (0: beta at once)
    cyclical: bool                   # restart the ramp every anneal_epochs (Fu et al. 2019)
    free_bits: NonNegativeFloat      # nats per latent dimension below which KL is not penalised


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B, latent) KL(q(z|x) || N(0, I)) per dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def kl_term(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Batch KL summed over dimensions; free bits: no pressure on a dimension whose batch-mean KL
    is below the floor."""
    return torch.clamp(kl_per_dim(mu, logvar).mean(0), min=free_bits).sum()


def kl_weight(kl, epoch: int | None) -> float:
    """KL weight at `epoch` under the KlSchedule `kl`; None: the weight once the schedule is done."""
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
    """KL in total and per dimension, and active units: dimensions whose Var_x(mu) exceeds the threshold."""
    kl = kl_per_dim(torch.from_numpy(mu), torch.from_numpy(logvar)).mean(0).numpy()
    variance = mu.var(axis=0, ddof=1) if len(mu) > 1 else np.zeros(mu.shape[1])
    return {"kl": float(kl.sum()), "active_units": float((variance > active_threshold).sum()),
            **{f"kl_dim_{j}": float(v) for j, v in enumerate(kl)}}


@torch.no_grad()
def encode_decode(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, ...]],
                  output: Callable[[torch.Tensor], torch.Tensor]) -> tuple[np.ndarray, ...]:
    """Inputs, outputs decoded from z = mu (`output` maps the forward pass's first result to data
    space), mu and logvar over a split, as numpy arrays."""
    model.eval()
    xs, outs, mus, logvars = [], [], [], []
    for (x,) in batches:
        raw, mu, logvar = model(x)
        xs.append(x.cpu()), outs.append(output(raw).cpu()), mus.append(mu.cpu()), logvars.append(logvar.cpu())
    return tuple(torch.cat(t).numpy() for t in (xs, outs, mus, logvars))
