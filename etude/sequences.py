"""Note sequences: per note (pitch, step, duration), as in the TensorFlow music-generation tutorial.

Notes of each piece are sorted by start; step is the time from the previous note's start (0 for
the first note and within chords), duration is end - start, both in seconds. All pieces are
concatenated into flat arrays with piece offsets, stored in one npz. Normalisation statistics come
from the training split only. Drum notes carry no pitch: a piece with nothing else is skipped. A
corpus with no pitched note at all (a drum corpus) gives an empty set, its skip records kept: the
variants that read it stop at configure (etude.skips.empty_error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from etude.errors import DataError
from etude.ingest import usable
from etude.params import Tokenize
from etude.skips import (
    TRAINING_SPLIT_HINT,
    SkipRecords,
    skipped_arrays,
    skipped_from,
    skipped_table,
)
from etude.sources import SPLIT_CODES

ONLY_DRUMS = "only drum notes (tokenize keeps pitched notes only)"
WHAT = "pitched note"  # what one element of the set is, in messages
STAT_NAMES = (
    "duration_mean",
    "duration_median",
    "duration_std",
    "step_mean",
    "step_median",
    "step_std",
    "train_notes",
)


@dataclass(frozen=True)
class NoteSequences(SkipRecords):
    pitch: np.ndarray  # int16 (N,)
    step: np.ndarray  # float32 (N,) seconds
    duration: np.ndarray  # float32 (N,) seconds
    offsets: np.ndarray  # int64 (P+1,) note index where each piece starts
    piece_ids: np.ndarray  # int32 (P,) ids in the pieces table
    piece_split: np.ndarray  # int8 (P,) SPLIT_CODES
    stats: dict[str, float]  # training-split statistics
    train_pitch_counts: np.ndarray  # int64 (128,) pitch histogram of the training split
    skipped: pd.DataFrame  # piece, path, reason of each usable piece left out
    source: Path | None = field(default=None, compare=False)  # the file it was loaded from

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # file handle: np.savez would otherwise append ".npz"
            np.savez(
                f,
                pitch=self.pitch,
                step=self.step,
                duration=self.duration,
                offsets=self.offsets,
                piece_ids=self.piece_ids,
                piece_split=self.piece_split,
                train_pitch_counts=self.train_pitch_counts,
                stat_names=np.array(sorted(self.stats)),
                stat_values=np.array([self.stats[k] for k in sorted(self.stats)], dtype=np.float64),
                **skipped_arrays(self.skipped),
            )

    @classmethod
    def load(cls, path: Path) -> NoteSequences:
        with np.load(path) as z:
            stats = dict(zip(z["stat_names"].tolist(), z["stat_values"].tolist()))
            return cls(
                z["pitch"],
                z["step"],
                z["duration"],
                z["offsets"],
                z["piece_ids"],
                z["piece_split"],
                stats,
                z["train_pitch_counts"],
                skipped_from(z),
                Path(path),
            )

    @property
    def empty(self) -> bool:
        """No piece had a pitched note: every usable piece is in `skipped`."""
        return len(self.piece_ids) == 0

    @property
    def what(self) -> str:
        return WHAT

    set_name = "the note sequence set"

    def features(self) -> np.ndarray:
        """(N, 3) float32: pitch, step, duration."""
        return np.stack([self.pitch.astype(np.float32), self.step, self.duration], axis=1)

    def window_starts(self, split: str, length: int) -> np.ndarray:
        """Indices of every window of `length` notes lying inside one piece of `split`."""
        starts = []
        for p in np.flatnonzero(self.piece_split == SPLIT_CODES[split]):
            first, end = self.offsets[p], self.offsets[p + 1]
            if end - first >= length:
                starts.append(np.arange(first, end - length + 1))
        return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)

    def split_mask(self, split: str) -> np.ndarray:
        counts = np.diff(self.offsets)
        return np.repeat(self.piece_split == SPLIT_CODES[split], counts)


def build(notes: pd.DataFrame, pieces: pd.DataFrame, settings: Tokenize) -> NoteSequences:
    candidates = usable(pieces).sort_values("id")
    keep = notes[~notes["is_drum"] & notes["piece"].isin(candidates["id"])]
    order = ["piece", "start", "pitch"] if settings.sort_chords_by_pitch else ["piece", "start"]
    keep = keep.sort_values(order, kind="stable")
    piece = keep["piece"].to_numpy()
    start = keep["start"].to_numpy()
    step = np.diff(start, prepend=start[:1])
    first_of_piece = np.r_[True, piece[1:] != piece[:-1]] if len(piece) else np.zeros(0, bool)
    step[first_of_piece] = 0.0
    duration = keep["end"].to_numpy() - start

    # Ingest keeps only pieces with notes, so a usable piece without pitched notes had drum notes
    # alone.
    has_notes = candidates["id"].isin(np.unique(piece))
    skipped = skipped_table(pieces, dict.fromkeys(candidates.loc[~has_notes, "id"], ONLY_DRUMS))
    present = candidates[has_notes]
    if present.empty:
        return empty_set(skipped)
    counts = keep.groupby("piece").size().reindex(present["id"]).to_numpy()
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    piece_split = present["split"].map(SPLIT_CODES).to_numpy(np.int8)
    train = np.repeat(piece_split == SPLIT_CODES["train"], counts)
    if not train.any():
        raise DataError(f"the training split has no pitched note; {TRAINING_SPLIT_HINT}")
    pitch = keep["pitch"].to_numpy(np.int16)
    return NoteSequences(
        pitch,
        step.astype(np.float32),
        duration.astype(np.float32),
        offsets,
        present["id"].to_numpy(np.int32),
        piece_split,
        _stats(step[train], duration[train]),
        np.bincount(pitch[train], minlength=128).astype(np.int64),
        skipped,
    )


def empty_set(skipped: pd.DataFrame) -> NoteSequences:
    """The set of a corpus without a pitched note: no piece, no statistics (NaN), its skip
    records."""
    stats = {name: float("nan") for name in STAT_NAMES} | {"train_notes": 0.0}
    return NoteSequences(
        np.zeros(0, np.int16),
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        np.zeros(1, np.int64),
        np.zeros(0, np.int32),
        np.zeros(0, np.int8),
        stats,
        np.zeros(128, np.int64),
        skipped,
    )


def _stats(step: np.ndarray, duration: np.ndarray) -> dict[str, float]:
    # The small floor keeps a degenerate corpus (all steps equal) from dividing by zero.
    return {
        "step_mean": float(step.mean()),
        "step_std": float(step.std() + 1e-8),
        "step_median": float(np.median(step)),
        "duration_mean": float(duration.mean()),
        "duration_std": float(duration.std() + 1e-8),
        "duration_median": float(np.median(duration)),
        "train_notes": float(len(step)),
    }
