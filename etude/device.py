"""Where a variant computes, and the seeds and threads that make its numbers repeat."""

from __future__ import annotations

import random

import numpy as np
import torch


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        # CPU kernels are deterministic already (and the global flag costs ~35 us per sampling
        # step); warn_only: cuDNN's LSTM backward has no deterministic variant.
        torch.use_deterministic_algorithms(True, warn_only=True)
