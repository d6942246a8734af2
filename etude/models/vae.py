"""What every VAE family shares: the KL term, its schedule, and the latent-usage statistics."""

from __future__ import annotations

import numpy as np
import torch


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
