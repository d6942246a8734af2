"""Log-mel segments of every piece's audio, written as a few large shards.

Each piece's audio (recording or rendering, etude.audio) is resampled to `mel.sample_rate`, cut into
segments of `segment_s`, and turned into a log-mel spectrogram in dB below the segment's maximum,
floored at -top_db (the MusicVAE recipe: 0 dB = segment max). Silent segments are skipped. Pieces
are processed in worker processes and streamed into float16 shards of `shard_segments` segments, so
memory stays bounded by a few pieces and one shard whatever the corpus size (full MAESTRO is about
200 hours: ~240,000 segments, 16 GB of float16). Per-bin normalisation statistics come from the
training split only and are applied when the data is loaded, not baked into the shards.

A piece without a non-silent segment (audio shorter than one segment, or silent throughout) or whose
audio cannot be loaded or rendered is skipped with its reason; the stage fails only when no piece is
left.

Layout of the output folder:
  shard_NNNNN.npy    float16 (segments, n_mels, frames), memory-mapped when read
  segments.parquet   one row per segment: piece, split, start_s, level_db, shard, row
  pieces.parquet     one row per piece: audio source, seconds, segments kept and skipped, path, and
                     the reason the piece was skipped (null for the pieces used)
  stats.npz          per-bin mean and std (dB, training split) and the mel geometry
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import torch
from audioread.exceptions import (
    DecodeError,
)  # librosa's fallback decoder when soundfile cannot read a file
from librosa.util.exceptions import ParameterError
from tqdm import tqdm

from etude import audio
from etude.errors import DataError
from etude.ingest import usable
from etude.params import Audio, Mel
from etude.skips import SKIPPED_COLUMNS, TRAINING_SPLIT_HINT, nothing_left, one_line
from etude.sources import SPLITS


def frames_per_segment(settings: Mel) -> int:
    return 1 + int(round(settings.segment_s * settings.sample_rate)) // settings.hop_length


def mel_filterbank(settings: Mel) -> torch.Tensor:
    # The reference recipe: HTK mel scale, Slaney area normalisation.
    return torch.from_numpy(
        librosa.filters.mel(
            sr=settings.sample_rate,
            n_fft=settings.n_fft,
            n_mels=settings.n_mels,
            fmin=settings.fmin,
            fmax=settings.fmax,
            htk=True,
            norm="slaney",
        )
    )


def log_mel(segments: np.ndarray, settings: Mel, filterbank: torch.Tensor) -> np.ndarray:
    """(n, samples) audio -> (n, n_mels, frames) dB below each segment's maximum, floored at
    -top_db."""
    x = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.float32))
    spec = (
        torch.stft(
            x,
            settings.n_fft,
            settings.hop_length,
            window=torch.hann_window(settings.n_fft),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        .abs()
        .pow(2)
    )
    power = filterbank @ spec
    peak = power.amax(dim=(1, 2), keepdim=True)
    floor = peak * 10 ** (-settings.top_db / 10)
    # The guard only keeps log10 finite on digital silence, which min_level_db skips anyway.
    db = 10 * torch.log10(torch.maximum(power, floor).clamp_min(1e-30) / peak.clamp_min(1e-30))
    return db.numpy()


def segment(samples: np.ndarray, settings: Mel) -> tuple[np.ndarray, np.ndarray]:
    """(n, segment samples) windows (a view of `samples`) and their start times; the incomplete
    last window is dropped."""
    length = int(round(settings.segment_s * settings.sample_rate))
    hop = int(round(settings.segment_hop_s * settings.sample_rate))
    if len(samples) < length:
        return np.zeros((0, length), np.float32), np.zeros(0)
    windows = np.lib.stride_tricks.sliding_window_view(samples, length)[::hop]  # a view: no copy
    return windows, np.arange(len(windows)) * hop / settings.sample_rate


@dataclass
class PieceMel:
    piece: int
    source: str
    seconds: float
    mel: np.ndarray  # (kept, n_mels, frames) float16
    start_s: np.ndarray
    level_db: np.ndarray
    skipped_silent: int
    reason: str | None = None  # why the piece is skipped: no segment was kept, or its audio failed


@dataclass
class _Job:
    piece: int
    midi: bytes
    audio_path: str | None


def _source(job: _Job, audio_settings: Audio) -> str:
    return audio.RECORDING if job.audio_path is not None else audio.rendered_label(audio_settings)


def _piece_mel(job: _Job, audio_settings: Audio, settings: Mel, soundfont: Path) -> PieceMel:
    torch.set_num_threads(1)  # one piece per process: the processes share the cores
    limit = settings.max_seconds_per_piece
    if job.audio_path is not None:
        samples = audio.load_recording(job.audio_path, settings.sample_rate, limit)
    else:
        samples = audio.render(job.midi, audio_settings, soundfont, settings.sample_rate, limit)
    seconds = len(samples) / settings.sample_rate
    windows, starts = segment(samples, settings)
    energy = np.einsum("ij,ij->i", windows, windows, dtype=np.float64) / max(windows.shape[1], 1)
    level = 10 * np.log10(np.maximum(energy, 1e-30))
    keep = level >= settings.min_level_db
    kept = np.flatnonzero(keep)
    filterbank = mel_filterbank(settings)
    mel = np.zeros((len(kept), settings.n_mels, frames_per_segment(settings)), np.float16)
    for i in range(0, len(kept), settings.batch_segments):
        batch = kept[i : i + settings.batch_segments]
        mel[i : i + len(batch)] = log_mel(windows[batch], settings, filterbank)
    return PieceMel(
        job.piece,
        _source(job, audio_settings),
        seconds,
        mel,
        starts[keep],
        level[keep],
        int((~keep).sum()),
        _no_segment_reason(len(windows), len(kept), settings),
    )


def _no_segment_reason(segments: int, kept: int, settings: Mel) -> str | None:
    if segments == 0:
        return f"audio shorter than one mel segment (mel.segment_s={settings.segment_s:g} s)"
    if kept == 0:
        limit = settings.max_seconds_per_piece
        where = (
            f" of its first {limit:g} s (mel.max_seconds_per_piece)" if limit is not None else ""
        )
        return (
            f"silent: every segment{where} is below mel.min_level_db={settings.min_level_db:g} dB"
        )
    return None


# What a bad piece raises, so that it costs its piece and not the corpus; any other class
# (TypeError, KeyError, ...) is a bug here and stops the stage. A recording: OSError when missing or
# unreadable; soundfile's LibsndfileError (a RuntimeError), after which librosa falls back to
# audioread, whose stdlib readers raise EOFError on a file of a few bytes, RuntimeError, ValueError,
# ArithmeticError or MemoryError on a corrupt header (bad chunk, channel count, rate or length) and
# DecodeError (NoBackendError) when none can read it; librosa's ParameterError for samples that are
# not finite. A rendering: RuntimeError from symusic and TinySoundFont, ValueError from
# audio.render's own checks (no notes, no percussion kit).
BAD_PIECE_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    ArithmeticError,
    MemoryError,
    DecodeError,
    ParameterError,
)


def _worker(args: tuple[_Job, Audio, Mel, Path]) -> PieceMel:
    job, audio_settings, settings, _ = args
    try:
        return _piece_mel(*args)
    except BAD_PIECE_ERRORS as err:
        empty = np.zeros((0, settings.n_mels, frames_per_segment(settings)), np.float16)
        return PieceMel(
            job.piece,
            _source(job, audio_settings),
            float("nan"),
            empty,
            np.zeros(0),
            np.zeros(0, np.float32),
            0,
            one_line(str(err)) or type(err).__name__,
        )


class _ShardWriter:
    """Appends segments and writes a shard each time `shard_segments` have accumulated."""

    def __init__(self, out_dir: Path, settings: Mel):
        self.out_dir, self.size = out_dir, settings.shard_segments
        self.pending: list[np.ndarray] = []
        self.count = 0
        self.shards = 0

    def add(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard and row of each added segment."""
        shard = np.empty(len(mel), np.int32)
        row = np.empty(len(mel), np.int32)
        for i in range(len(mel)):
            shard[i], row[i] = self.shards, self.count
            self.pending.append(mel[i])
            self.count += 1
            if self.count == self.size:
                self.flush()
        return shard, row

    def flush(self) -> None:
        if self.pending:
            np.save(self.out_dir / f"shard_{self.shards:05d}.npy", np.stack(self.pending))
            self.pending, self.count = [], 0
            self.shards += 1


def _accumulate(sums: dict, mel: np.ndarray, batch: int) -> None:
    """Per-bin sums for the normalisation statistics, in float64 a batch at a time (a float64 copy
    of a whole 40-minute piece would be ~400 MB)."""
    for i in range(0, len(mel), batch):
        db = mel[i : i + batch].astype(np.float64)
        sums["sum"] += db.sum(axis=(0, 2))
        sums["sumsq"] += (db**2).sum(axis=(0, 2))
        sums["frames"] += db.shape[0] * db.shape[2]


def _in_order(pool, jobs: list, ahead: int) -> Iterator[PieceMel]:
    """Results in job order (shards identical for any number of workers), with at most `ahead`
    pieces submitted or waiting: Pool.imap would queue every finished piece behind a long one."""
    pending: deque = deque()
    remaining = iter(jobs)
    for job in itertools.islice(remaining, ahead):
        pending.append(pool.apply_async(_worker, (job,)))
    while pending:
        result = pending.popleft().get()
        for job in itertools.islice(remaining, 1):
            pending.append(pool.apply_async(_worker, (job,)))
        yield result


def build(
    raw: pd.DataFrame,
    pieces: pd.DataFrame,
    audio_settings: Audio,
    settings: Mel,
    out_dir: Path,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the shards, segment and piece tables and statistics; return (segments, pieces), the
    pieces table with a row for every usable piece, skipped ones included."""
    candidates = usable(pieces)
    if candidates.empty:
        raise DataError("no usable piece in the pieces table")
    needs_render = not audio_settings.use_recordings or candidates["audio_path"].isna().any()
    soundfont = audio.soundfont_path(audio_settings) if needs_render else Path()
    by_path = dict(zip(raw["path"], raw["data"]))
    use_recording = audio_settings.use_recordings
    # A recording absent from disk reads back from parquet as NaN, not None: that piece is rendered.
    jobs = [
        (
            _Job(
                int(p.id),
                by_path[p.path],
                p.audio_path if use_recording and pd.notna(p.audio_path) else None,
            ),
            audio_settings,
            settings,
            soundfont,
        )
        for p in candidates.itertuples()
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("shard_*.npy"):
        stale.unlink()

    writer = _ShardWriter(out_dir, settings)
    split_of = dict(zip(candidates["id"], candidates["split"]))
    path_of = dict(zip(candidates["id"], candidates["path"]))
    n_bins = settings.n_mels
    sums = {"sum": np.zeros(n_bins), "sumsq": np.zeros(n_bins), "frames": 0}
    segment_frames, piece_rows = [], []
    bar = {
        "total": len(jobs),
        "desc": "mel",
        "unit": "piece",
        "disable": None if progress else True,
    }
    if settings.workers == 1:
        results, pool = map(_worker, jobs), None
    else:
        pool = multiprocessing.get_context("spawn").Pool(settings.workers)
        results = _in_order(pool, jobs, ahead=2 * settings.workers)
    try:
        for result in tqdm(results, **bar):
            split = split_of[result.piece]
            shard, row = writer.add(result.mel)
            segment_frames.append(
                pd.DataFrame(
                    {
                        "piece": result.piece,
                        "split": split,
                        "start_s": result.start_s,
                        "level_db": result.level_db.astype(np.float32),
                        "shard": shard,
                        "row": row,
                    }
                )
            )
            piece_rows.append(
                {
                    "piece": result.piece,
                    "split": split,
                    "audio": result.source,
                    "seconds": result.seconds,
                    "segments": len(result.mel),
                    "skipped_silent": result.skipped_silent,
                    "path": path_of[result.piece],
                    "reason": result.reason,
                }
            )
            if split == "train":
                _accumulate(sums, result.mel, settings.batch_segments)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    writer.flush()
    segments = pd.concat(segment_frames, ignore_index=True)
    piece_table = pd.DataFrame(piece_rows)
    if segments.empty:
        raise DataError(nothing_left("non-silent mel segment", _skipped(piece_table)))
    if sums["frames"] == 0:
        raise DataError(f"the training split has no non-silent mel segment; {TRAINING_SPLIT_HINT}")
    for split in SPLITS:
        if not (segments["split"] == split).any():
            print(f"mel: WARNING: the {split} split has no segment")
    mean = sums["sum"] / sums["frames"]
    std = np.sqrt(np.maximum(sums["sumsq"] / sums["frames"] - mean**2, 0))
    np.savez(
        out_dir / "stats.npz",
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        **{
            k: np.asarray(v if v is not None else settings.sample_rate / 2)
            for k, v in settings.model_dump().items()
            if k in GEOMETRY
        },
    )
    segments.to_parquet(out_dir / "segments.parquet", index=False)
    piece_table.to_parquet(out_dir / "pieces.parquet", index=False)
    return segments, piece_table


def _skipped(piece_table: pd.DataFrame) -> pd.DataFrame:
    """The skip records (piece, path, reason) among the rows of a mel pieces table."""
    return piece_table.loc[piece_table["reason"].notna(), list(SKIPPED_COLUMNS)].reset_index(
        drop=True
    )


GEOMETRY = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "segment_s")


class MelSet:
    """The mel stage's output, read lazily: shards are memory-mapped, so a full-MAESTRO set costs
    page cache, not process memory. `normalised(index)` returns per-bin standardised segments."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not (self.folder / "segments.parquet").exists():
            raise FileNotFoundError(f"{self.folder}: no mel segments; run the mel stage first")
        self.segments = pd.read_parquet(self.folder / "segments.parquet")
        table = pd.read_parquet(self.folder / "pieces.parquet")
        self.pieces = table[table["reason"].isna()].reset_index(
            drop=True
        )  # the pieces that have segments
        self.skipped = _skipped(table)
        stats = np.load(self.folder / "stats.npz")
        self.mean, self.std = stats["mean"], stats["std"]
        self.geometry = {k: stats[k].item() for k in GEOMETRY}
        self.shards = [np.load(p, mmap_mode="r") for p in sorted(self.folder.glob("shard_*.npy"))]
        self._shard = self.segments["shard"].to_numpy()
        self._row = self.segments["row"].to_numpy()

    @property
    def shape(self) -> tuple[int, int]:
        return self.shards[0].shape[1:] if self.shards else (0, 0)

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.segments["split"].to_numpy() == split)

    def db(self, index: np.ndarray) -> np.ndarray:
        """(n, n_mels, frames) float32 dB of the segments at `index`, in that order."""
        out = np.empty((len(index), *self.shape), np.float32)
        for i, k in enumerate(index):
            out[i] = self.shards[self._shard[k]][self._row[k]]
        return out

    def normalise(self, db: np.ndarray) -> np.ndarray:
        return (db - self.mean[:, None]) / (self.std[:, None] + 1e-6)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        return denormalised(x, self.mean, self.std)

    def normalised(self, index: np.ndarray) -> np.ndarray:
        return self.normalise(self.db(index))


def denormalised(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalised values back to dB with the per-bin training statistics (MelSet.normalise's
    inverse)."""
    return x * (std[:, None] + 1e-6) + mean[:, None]
