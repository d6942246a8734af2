"""The baseline ladder of next-note models: trivial predictors fitted on the training split and
scored on the same test windows as the model, each a table a model must beat to have learned more
than it.

Pitch: unigram frequencies, the unigram of intervals (the step in semitones from the previous
note), a pitch bigram, and a 3-gram over intervals interpolated with the interval unigram and a
uniform floor. Timing: the training median (MAE) and the unigram over the timing bins
(cross-entropy in nats, comparable with a binned head's). Counts are add-`smoothing` smoothed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import NonNegativeFloat, PositiveFloat, model_validator

from etude.params import Strict
from etude.sequences import NoteSequences

VOCAB = 128
INTERVALS = 2 * VOCAB - 1  # -127 .. +127 semitones


class BaselineSettings(Strict):
    """How the baseline ladder is fitted: add-k smoothing of every count table, and the 3-gram's
    interpolation weights (3-gram, interval unigram, uniform; they sum to 1)."""

    smoothing: PositiveFloat
    interpolation: tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat]

    @model_validator(mode="after")
    def _weights(self) -> BaselineSettings:
        if abs(sum(self.interpolation) - 1) > 1e-6:
            raise ValueError("interpolation weights must sum to 1")
        if self.interpolation[2] == 0:
            raise ValueError("the uniform weight (the third) must be above 0: an unseen interval")
        return self


@dataclass(frozen=True)
class Context:
    """The test targets and what the trivial predictors read: the two previous pitches."""

    pitch: np.ndarray  # (N,) target pitch
    previous: np.ndarray  # (N,) the pitch before it
    before_previous: np.ndarray  # (N,) the one before that


def training_pairs(data: NoteSequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pitch, previous, before previous) of every training note with two notes before it in its
    piece."""
    train = data.split_mask("train")
    pitch = data.pitch.astype(np.int64)
    starts = data.offsets[:-1]
    position = np.arange(len(pitch)) - np.repeat(starts, np.diff(data.offsets))
    keep = train & (position >= 2)
    index = np.flatnonzero(keep)
    return pitch[index], pitch[index - 1], pitch[index - 2]


def _cross_entropy(probabilities: np.ndarray) -> float:
    return float(-np.log(probabilities).mean())


def pitch_ladder(
    data: NoteSequences, test: Context, settings: BaselineSettings
) -> dict[str, float]:
    """Test pitch cross-entropy (nats) of each pitch baseline, by name."""
    k = settings.smoothing
    pitch, previous, before = training_pairs(data)
    unigram = np.bincount(pitch, minlength=VOCAB)[:VOCAB] + k
    unigram = unigram / unigram.sum()

    interval = pitch - previous + VOCAB - 1
    interval_counts = np.bincount(interval, minlength=INTERVALS) + k
    interval_p = interval_counts / interval_counts.sum()

    def interval_given(previous_pitch: np.ndarray, table: np.ndarray) -> np.ndarray:
        """(N, 128): each row's interval probabilities as pitches, renormalised to 0..127."""
        rows = table[np.arange(VOCAB)[None, :] - previous_pitch[:, None] + VOCAB - 1]
        return rows / rows.sum(axis=1, keepdims=True)

    bigram = np.zeros((VOCAB, VOCAB)) + k
    np.add.at(bigram, (previous, pitch), 1)
    bigram /= bigram.sum(axis=1, keepdims=True)

    last_interval = previous - before + VOCAB - 1
    trigram = np.zeros((INTERVALS, INTERVALS)) + k
    np.add.at(trigram, (last_interval, interval), 1)
    trigram /= trigram.sum(axis=1, keepdims=True)

    rows = np.arange(len(test.pitch))
    uni = interval_given(test.previous, interval_p)[rows, test.pitch]
    context = test.previous - test.before_previous + VOCAB - 1
    tri_rows = trigram[context]  # (N, INTERVALS)
    tri = tri_rows[rows[:, None], np.arange(VOCAB)[None, :] - test.previous[:, None] + VOCAB - 1]
    tri = (tri / tri.sum(axis=1, keepdims=True))[rows, test.pitch]
    w3, w1, w0 = settings.interpolation
    return {
        "pitch_unigram": _cross_entropy(unigram[test.pitch]),
        "interval_unigram": _cross_entropy(uni),
        "pitch_bigram": _cross_entropy(bigram[test.previous, test.pitch]),
        "interval_trigram": _cross_entropy(w3 * tri + w1 * uni + w0 / VOCAB),
    }


def binned_unigram(train_bins: np.ndarray, test_bins: np.ndarray, count: int, k: float) -> float:
    """Test cross-entropy (nats) of the training split's bin frequencies."""
    frequencies = np.bincount(train_bins, minlength=count)[:count] + k
    return _cross_entropy((frequencies / frequencies.sum())[test_bins])


def best(ladder: dict[str, float]) -> tuple[str, float]:
    """The lowest cross-entropy of the ladder and its name."""
    name = min(ladder, key=ladder.__getitem__)
    return name, ladder[name]


def context_of(inputs: np.ndarray, target_pitch: np.ndarray) -> Context:
    """The trivial predictors' context from model windows (N, seq_len, 3): the last two pitches."""
    pitches = inputs[:, :, 0].astype(np.int64)
    return Context(
        target_pitch.astype(np.int64), pitches[:, -1], pitches[:, -min(2, pitches.shape[1])]
    )
