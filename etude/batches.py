"""Which examples of a split a batch holds: shuffled for training, evenly spaced for evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from etude.errors import DataError


def evenly_spaced(index: np.ndarray, limit: int | None) -> np.ndarray:
    """A deterministic subset of at most `limit` items spread over the whole split."""
    if limit is None or len(index) <= limit:
        return index
    return index[np.linspace(0, len(index) - 1, limit).round().astype(np.int64)]


def shuffled_batches(
    index: np.ndarray, seed: int, epoch: int, samples_per_epoch: int | None, batch_size: int
) -> Iterator[np.ndarray]:
    """An epoch's training batches as sorted index arrays. The order depends on (seed, epoch) alone,
    so a resumed run draws the same batches; full batches only, as BatchNorm cannot train on one."""
    order = np.random.default_rng([seed, epoch]).permutation(index)[:samples_per_epoch]
    for i in range(0, len(order) - batch_size + 1, batch_size):
        yield np.sort(order[i : i + batch_size])


def evaluation_batches(
    index: np.ndarray, limit: int | None, batch_size: int, split: str, what: str
) -> Iterator[np.ndarray]:
    """At most `limit` items of a split, evenly spaced, in order, in batches; an empty split is an
    error naming what it lacks."""
    index = evenly_spaced(index, limit)
    if len(index) == 0:
        raise DataError(f"the {split} split has no {what}")
    for i in range(0, len(index), batch_size):
        yield index[i : i + batch_size]
