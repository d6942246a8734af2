"""Grids for RhythmVAE / MelodyVAE: windows of `bars` bars on a beat grid, per cell
onset (0/1), velocity (0-1), duration (half notes, clamped) and timeshift.

Timeshift is the offset of an onset from its nearest grid line in units of half a step, in
[-1, 1), as in RhythmVAE: index = floor((t + unit/2) / unit), ts = (t - unit*index) / (unit/2).
Rows are lanes (rhythm: 9 pitch-register bands, or GM drum classes for drum tracks) or pitch rows
(melody: pitch folded into `rows` semitones above a base note). Two notes in one cell: the louder
is kept. Windows are consecutive from the first beat; those with fewer than `min_onsets` onsets are
dropped. A piece left without a window, or whose tempo cannot be estimated (a single note or chord,
onsets within less than one beat), is skipped with its reason; melody grids skip drum-only pieces,
and both skip pieces whose listed time signature (groove source) has no `beats_per_bar` quarter
notes a bar: their bars would straddle the windows. With no piece left (a drum corpus has no melody
window) the set is empty, its skip records kept: the variants that read it stop at configure
(etude.skips.empty_error).

A rhythm set built mostly from drum notes (a drum corpus) has drum lanes: decoding writes each row
as the GM drum note `grid.rhythm.drum_pitches` names, for a drum instrument (channel 10); otherwise
rows decode to the pitch at the centre of their band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import pandas as pd

from etude.errors import DataError
from etude.ingest import usable
from etude.params import Grid, Tempo
from etude.skips import (
    TRAINING_SPLIT_HINT,
    SkipRecords,
    Unusable,
    skipped_arrays,
    skipped_from,
    skipped_table,
)
from etude.sources import SPLIT_CODES

FEATURES = {
    "rhythm": ("onset", "velocity", "timeshift"),
    "melody": ("onset", "velocity", "duration", "timeshift"),
}


@dataclass(frozen=True)
class BeatGrid:
    """A piece's constant-tempo beat grid."""

    bpm: float
    phase: float  # seconds of the first grid line
    source: str  # file | estimate | fixed


def estimate_tempo(onsets: np.ndarray, weights: np.ndarray, settings: Tempo) -> tuple[float, float]:
    """(bpm, phase) of a performance from its note onsets.

    The global autocorrelation of a velocity-weighted onset envelope, under a log-normal prior
    around `prior_bpm` (the prior of librosa's tempo estimator). librosa's frame-wise tempogram
    gives the same answer but took 50 s for the ten sample pieces; one autocorrelation takes ms.
    The period is then refined on the exact onset times, and the phase is the velocity-weighted
    circular mean of onset positions within a beat. Unusable when the onsets span less than the
    slowest beat: nothing repeats within the lags searched.
    """
    span = float(np.ptp(onsets))
    if span == 0:
        raise Unusable("a single onset time (one note or chord): no tempo to estimate")
    if span < 60.0 / settings.min_bpm:
        raise Unusable(
            f"onsets span less than one beat at grid.tempo.min_bpm={settings.min_bpm:g}: "
            "no tempo to estimate"
        )
    fps = settings.frame_rate
    max_lag = int(np.ceil(fps * 60.0 / settings.min_bpm))
    # At least max_lag + 1 frames, so every lag searched has an autocorrelation value.
    envelope = np.zeros(max(int(onsets.max() * fps) + 2, max_lag + 1))
    np.add.at(envelope, (onsets * fps).astype(np.int64), weights)
    corr = librosa.autocorrelate(envelope - envelope.mean(), max_size=max_lag + 1)
    lags = np.arange(int(np.ceil(fps * 60.0 / settings.max_bpm)), max_lag + 1)
    bpm = 60.0 * fps / lags
    prior = np.exp(-0.5 * (np.log2(bpm / settings.prior_bpm) / settings.prior_octaves) ** 2)
    best = lags[np.argmax(corr[lags] * prior)]
    # The envelope quantises onsets to frames, and a period off by a fraction of a frame drifts
    # the phase by tenths of a second over a piece: refine within one frame on the exact onset
    # times, maximising the circular resultant |sum w exp(2 pi i t / period)| (a comb fit).
    beat, offset = comb_fit(
        onsets, weights, np.linspace(best - 1, best + 1, settings.refine_candidates) / fps
    )
    return 60.0 / beat, offset % beat


def comb_fit(onsets: np.ndarray, weights: np.ndarray, periods: np.ndarray) -> tuple[float, float]:
    """(period, offset in [-period/2, period/2)) maximising |sum w exp(2 pi i t / period)|: the
    beat lattice that the onsets fall on most closely."""
    resultant = np.exp(2j * np.pi * onsets[None, :] / periods[:, None]) @ weights
    k = int(np.argmax(np.abs(resultant)))
    return float(periods[k]), float(np.angle(resultant[k]) / (2 * np.pi) * periods[k])


def beat_grid(notes: pd.DataFrame, file_tempo_bpm: float, settings: Tempo) -> BeatGrid:
    """The piece's grid from the configured source. A file tempo that is missing or outside
    min_bpm..max_bpm (a malformed tempo event of 1 microsecond per beat would make millions of
    windows) is estimated instead, as the source column of the tempo table then says."""
    if settings.source == "fixed":
        return BeatGrid(settings.fixed_bpm, 0.0, "fixed")
    if settings.source == "file" and settings.min_bpm <= file_tempo_bpm <= settings.max_bpm:
        return BeatGrid(float(file_tempo_bpm), 0.0, "file")
    bpm, phase = estimate_tempo(
        notes["start"].to_numpy(), notes["velocity"].to_numpy() / 127.0, settings
    )
    return BeatGrid(bpm, phase, "estimate")


def rows_of(notes: pd.DataFrame, grid: Grid, representation: str) -> np.ndarray:
    pitch = notes["pitch"].to_numpy()
    if representation == "melody":
        return (pitch - grid.melody.base_note) % grid.melody.rows
    lanes = np.digitize(pitch, grid.rhythm.band_edges[1:-1])
    drums = notes["is_drum"].to_numpy()
    mapped = np.array([grid.rhythm.drum_map.get(int(p), -1) for p in pitch[drums]], dtype=np.int64)
    lanes[drums] = mapped  # unmapped drum notes: -1, dropped below
    return lanes


def num_rows(grid: Grid, representation: str) -> int:
    return grid.melody.rows if representation == "melody" else len(grid.rhythm.band_edges) - 1


def window_grids(notes: pd.DataFrame, beats: BeatGrid, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(start, unit) of consecutive windows: the first grid line of each, in seconds, and its step.

    With grid.tempo.local_tolerance 0 (or a tempo from the file or fixed) every window keeps the
    piece's tempo and phase. Otherwise each window refits its beat period (within the tolerance of
    the piece's) and phase (within half a beat) to its own onsets, and the next window starts where
    it ends: a piecewise-constant grid that follows rubato, so timeshift measures timing against
    the local pulse rather than against a tempo the performer left long ago.
    """
    beat0 = 60.0 / beats.bpm
    window_beats = grid.bars * grid.beats_per_bar
    tolerance = grid.tempo.local_tolerance if beats.source == "estimate" else 0.0
    onsets = np.sort(notes["start"].to_numpy())
    weights = (
        notes["velocity"].to_numpy()[np.argsort(notes["start"].to_numpy(), kind="stable")] / 127.0
    )
    periods = beat0 * np.linspace(1 - tolerance, 1 + tolerance, grid.tempo.refine_candidates)
    starts, units = [], []
    start = (
        beats.phase
        - np.ceil((beats.phase - onsets[0]) / (window_beats * beat0)) * window_beats * beat0
    )
    while start - beat0 / 2 <= onsets[-1]:
        beat = beat0
        if tolerance > 0:
            inside = (onsets >= start - beat0 / 2) & (onsets < start + (window_beats - 0.5) * beat0)
            if inside.sum() >= 2:
                beat, offset = comb_fit(onsets[inside] - start, weights[inside], periods)
                start += offset
        starts.append(start)
        units.append(beat / grid.steps_per_beat)
        start += window_beats * beat
    return np.array(starts), np.array(units)


def encode(
    notes: pd.DataFrame, beats: BeatGrid, grid: Grid, representation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows, start, unit): grids (W, F, R, T) float32, each window's first grid line (s) and
    step (s)."""
    features = FEATURES[representation]
    steps = grid.bars * grid.beats_per_bar * grid.steps_per_beat
    starts, units = window_grids(notes, beats, grid)
    # Each note belongs to the window whose first cell's half-step catchment has begun.
    t = notes["start"].to_numpy()
    window = np.clip(np.searchsorted(starts - units / 2, t, side="right") - 1, 0, len(starts) - 1)
    unit = units[window]
    index = np.floor((t - starts[window] + unit / 2) / unit).astype(np.int64)
    rows = rows_of(notes, grid, representation)
    # A window that refit its phase later leaves a gap after the previous one: notes there fall on
    # no cell and are dropped rather than moved.
    keep = (rows >= 0) & (index >= 0) & (index < steps)
    if representation == "melody" and grid.melody.voice == "skyline":
        keep &= _is_skyline(window * steps + index, notes["pitch"].to_numpy())
    notes, rows, window, index, unit, t = (
        notes[keep],
        rows[keep],
        window[keep],
        index[keep],
        unit[keep],
        t[keep],
    )

    timeshift = np.clip(
        (t - starts[window] - unit * index) / (unit / 2), -1.0, np.nextafter(np.float32(1), 0)
    )
    velocity = notes["velocity"].to_numpy() / 127.0
    half_note = 2 * grid.steps_per_beat * unit
    duration = np.clip(
        (notes["end"] - notes["start"]).to_numpy() / half_note, grid.duration_min, grid.duration_max
    )
    cell = index
    # Two notes in one cell: the louder wins (first occurrence after a stable descending sort).
    order = np.argsort(-velocity, kind="stable")
    key = (window * num_rows(grid, representation) + rows) * steps + cell
    _, first = np.unique(key[order], return_index=True)
    chosen = order[first]
    out = np.zeros(
        (len(starts), len(features), num_rows(grid, representation), steps), dtype=np.float32
    )
    values = {"onset": 1.0, "velocity": velocity, "duration": duration, "timeshift": timeshift}
    for f, name in enumerate(features):
        value = values[name]
        out[window[chosen], f, rows[chosen], cell[chosen]] = (
            value if np.isscalar(value) else value[chosen]
        )
    onsets = out[:, 0].sum(axis=(1, 2))
    kept = np.flatnonzero(onsets >= max(grid.min_onsets, 1))
    return out[kept], starts[kept], units[kept]


def _is_skyline(step: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """True for the highest note among those whose onsets fall in the same grid step."""
    order = np.lexsort((-pitch, step))
    first = np.r_[True, step[order][1:] != step[order][:-1]]
    mask = np.zeros(len(step), dtype=bool)
    mask[order[first]] = True
    return mask


def lane_pitches(grid: Grid, representation: str, drum_lanes: bool = False) -> np.ndarray:
    """The pitch written for each row when decoding: band centres or GM drum notes (rhythm), base +
    row (melody)."""
    if representation == "melody":
        return grid.melody.base_note + np.arange(grid.melody.rows)
    if drum_lanes:
        return np.array(grid.rhythm.drum_pitches)
    edges = np.array(grid.rhythm.band_edges)
    return ((edges[:-1] + edges[1:] - 1) // 2).clip(0, 127)


def decode(
    window: np.ndarray,
    start_s: float,
    unit: float,
    grid: Grid,
    representation: str,
    onset_threshold: float = 0.5,
    grid_offset: float = 1.0,
    drum_lanes: bool = False,
) -> pd.DataFrame:
    """Notes (pitch, velocity, start, end in seconds, is_drum) of one (F, R, T) grid whose first
    grid line is at `start_s` with steps of `unit` seconds, with micro-timing scaled by
    `grid_offset`."""
    features = FEATURES[representation]
    rows, cells = np.nonzero(window[0] > onset_threshold)
    get = lambda name: window[features.index(name), rows, cells]
    start = start_s + cells * unit + get("timeshift") * grid_offset * unit / 2
    # Rhythm grids carry no duration: each note lasts one step.
    length = (
        get("duration") * 2 * grid.steps_per_beat * unit
        if "duration" in features
        else np.full(len(rows), unit)
    )
    velocity = np.clip(np.round(get("velocity") * 127), 1, 127).astype(int)
    frame = pd.DataFrame(
        {
            "pitch": lane_pitches(grid, representation, drum_lanes)[rows],
            "velocity": velocity,
            "start": start,
            "end": start + length,
            "is_drum": drum_lanes,
        }
    )
    return frame.sort_values(["start", "pitch"], ignore_index=True)


@dataclass(frozen=True)
class GridSet(SkipRecords):
    grids: np.ndarray  # (W, F, R, T) float32
    piece: np.ndarray  # (W,) piece id
    start: np.ndarray  # (W,) seconds of each window's first grid line
    unit: np.ndarray  # (W,) seconds per grid step of each window
    split: np.ndarray  # (W,) SPLIT_CODES
    tempo: pd.DataFrame  # per piece: id, bpm, phase, source
    grid: Grid  # the geometry the grids were built with: decoding needs it
    representation: str
    skipped: pd.DataFrame  # piece, path, reason of each usable piece without a window
    drum_lanes: bool = (
        False  # rows are GM drum classes: decode to grid.rhythm.drum_pitches on a drum track
    )
    source: Path | None = field(default=None, compare=False)  # the file it was loaded from

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez(
                f,
                grids=self.grids,
                piece=self.piece,
                start=self.start,
                unit=self.unit,
                split=self.split,
                grid=np.array(self.grid.model_dump_json()),
                representation=np.array(self.representation),
                tempo_id=self.tempo["id"].to_numpy(),
                tempo_bpm=self.tempo["bpm"].to_numpy(),
                tempo_phase=self.tempo["phase"].to_numpy(),
                tempo_source=self.tempo["source"].to_numpy(str),
                drum_lanes=np.array(self.drum_lanes),
                **skipped_arrays(self.skipped),
            )

    @classmethod
    def load(cls, path: Path) -> GridSet:
        with np.load(path) as z:
            tempo = pd.DataFrame(
                {
                    "id": z["tempo_id"],
                    "bpm": z["tempo_bpm"],
                    "phase": z["tempo_phase"],
                    "source": z["tempo_source"],
                }
            )
            return cls(
                z["grids"],
                z["piece"],
                z["start"],
                z["unit"],
                z["split"],
                tempo,
                Grid.model_validate_json(str(z["grid"])),
                str(z["representation"]),
                skipped_from(z),
                bool(z["drum_lanes"]),
                Path(path),
            )

    @property
    def set_name(self) -> str:
        return f"the {self.representation} grid set"

    @property
    def what(self) -> str:
        """What one element of the set is, in messages."""
        return f"{self.representation} window"

    @property
    def empty(self) -> bool:
        """No piece gave a window: every usable piece is in `skipped`."""
        return len(self.grids) == 0

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLIT_CODES[split])


def piece_grids(
    notes: pd.DataFrame, file_tempo_bpm: float, grid: Grid, representation: str
) -> tuple[BeatGrid, np.ndarray, np.ndarray, np.ndarray]:
    """(beat grid, windows, start, unit) of one piece; Unusable when it yields no window."""
    encoded = notes
    if representation == "melody":
        # Drum notes name instruments, not pitches: folded into melody rows they would be noise.
        encoded = notes[~notes["is_drum"].to_numpy()]
        if encoded.empty:
            raise Unusable("only drum notes (melody grids use pitched notes only)")
    beats = beat_grid(
        notes, file_tempo_bpm, grid.tempo
    )  # every note: drums often carry the clearest pulse
    windows, start, unit = encode(encoded, beats, grid, representation)
    if not len(windows):
        raise Unusable(
            f"no {grid.bars}-bar window with {max(grid.min_onsets, 1)} onsets "
            f"(grid.min_onsets={grid.min_onsets})"
        )
    return beats, windows, start, unit


def check_meter(time_signature: str | None, grid: Grid) -> None:
    """Unusable when a bar of the piece's listed time signature (like 4-4, as the groove source
    checked) is not `grid.beats_per_bar` quarter notes; pieces of sources that list none are taken
    as they come."""
    if pd.isna(time_signature):
        return
    numerator, denominator = (int(n) for n in time_signature.split("-"))
    bar = numerator * 4 / denominator
    if bar != grid.beats_per_bar:
        raise Unusable(
            f"time signature {time_signature}: {bar:g} quarter notes a bar, "
            f"not grid.beats_per_bar={grid.beats_per_bar}"
        )


def build(notes: pd.DataFrame, pieces: pd.DataFrame, grid: Grid, representation: str) -> GridSet:
    candidates = usable(pieces).set_index("id")
    grids, piece_ids, starts, units, tempo_rows, reasons = [], [], [], [], [], {}
    for pid, group in notes[notes["piece"].isin(candidates.index)].groupby("piece", sort=True):
        file_tempo = candidates.loc[pid, "file_tempo_bpm"]
        try:
            check_meter(candidates.loc[pid, "time_signature"], grid)
            beats, windows, start, unit = piece_grids(group, file_tempo, grid, representation)
        except Unusable as err:
            reasons[pid] = str(err)
            continue
        tempo_rows.append(
            {"id": pid, "bpm": beats.bpm, "phase": beats.phase, "source": beats.source}
        )
        grids.append(windows)
        piece_ids.append(np.full(len(windows), pid, dtype=np.int32))
        starts.append(start)
        units.append(unit)
    skipped = skipped_table(pieces, reasons)
    if not grids:
        return empty_set(grid, representation, skipped)
    piece = np.concatenate(piece_ids)
    split = candidates.loc[piece, "split"].map(SPLIT_CODES).to_numpy(np.int8)
    if not (split == SPLIT_CODES["train"]).any():
        raise DataError(f"the training split has no {representation} window; {TRAINING_SPLIT_HINT}")
    # Drum lanes when drum notes are most of what was encoded: a drum corpus, not a band with a
    # drummer.
    drum_lanes = representation == "rhythm" and bool(
        notes.loc[notes["piece"].isin(piece), "is_drum"].mean() > 0.5
    )
    return GridSet(
        np.concatenate(grids),
        piece,
        np.concatenate(starts),
        np.concatenate(units),
        split,
        pd.DataFrame(tempo_rows),
        grid,
        representation,
        skipped,
        drum_lanes,
    )


def empty_set(grid: Grid, representation: str, skipped: pd.DataFrame) -> GridSet:
    """The set of a corpus where no piece gave a window: shaped (0, F, R, T), with its skip
    records."""
    steps = grid.bars * grid.beats_per_bar * grid.steps_per_beat
    shape = (0, len(FEATURES[representation]), num_rows(grid, representation), steps)
    tempo = pd.DataFrame(
        {
            "id": np.zeros(0, np.int32),
            "bpm": np.zeros(0),
            "phase": np.zeros(0),
            "source": np.zeros(0, str),
        }
    )
    return GridSet(
        np.zeros(shape, np.float32),
        np.zeros(0, np.int32),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0, np.int8),
        tempo,
        grid,
        representation,
        skipped,
    )
