"""Ingest: parse every MIDI file of the raw table into a notes table and a pieces table.

Parsing uses symusic (a C++ MIDI parser, about 150x faster than pretty_midi on MAESTRO) in a pool
of threads: symusic releases the GIL while parsing, and threads avoid copying results between
processes, which cost more than the parsing itself. A file that cannot be used is quarantined with
its reason in the pieces table; the run fails only when no usable file is left. What the later
stages do with a usable piece they cannot use is etude.skips.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import symusic
from tqdm import tqdm

from etude.params import Ingest

NOTE_COLUMNS = {
    "piece": "int32",
    "track": "int16",
    "program": "int16",
    "is_drum": "bool",
    "pitch": "int16",
    "velocity": "int16",
    "start": "float64",
    "end": "float64",
}
OK, QUARANTINED = "ok", "quarantined"
MIDI_DEFAULT_BPM = 120.0  # the tempo of a MIDI file without a tempo event


class NoUsableFiles(RuntimeError):
    """Every file of the source was quarantined."""


def usable(pieces: pd.DataFrame) -> pd.DataFrame:
    """The pieces that ingest did not quarantine."""
    return pieces[pieces["status"] == OK]


@dataclass
class Parsed:
    notes: dict[str, np.ndarray] | None
    duration: float
    error: str | None
    tempo_bpm: float = float(
        "nan"
    )  # the file's first tempo, else the listed one; meaningless for performance MIDI
    tempo_changes: int = 0


def parse_midi(payload: bytes, settings: Ingest, listed_bpm: float = float("nan")) -> Parsed:
    """Notes of one MIDI file in seconds, or the reason it cannot be used. `listed_bpm`: the tempo
    the source's metadata lists (groove: info.csv bpm), used when the file has no tempo event."""
    if not payload:
        return Parsed(None, 0.0, "empty file")
    if not payload.startswith(b"MThd"):
        return Parsed(None, 0.0, "not a MIDI file (no MThd header)")
    # symusic reports every malformed file (truncated, garbage after the header) as RuntimeError;
    # anything else is a bug, which must stop the run rather than quarantine every file.
    try:
        score = symusic.Score.from_midi(payload, ttype="second")
    except RuntimeError as err:
        return Parsed(None, 0.0, f"unreadable MIDI: {err}")
    tempos = [t.qpm for t in score.tempos]
    # Without a tempo event the seconds assume the MIDI default; a listed tempo times the ticks
    # instead.
    scale = MIDI_DEFAULT_BPM / listed_bpm if not tempos and listed_bpm > 0 else 1.0
    duration = float(score.end()) * scale
    columns: dict[str, list[np.ndarray]] = {k: [] for k in NOTE_COLUMNS if k != "piece"}
    dropped_drums = 0
    for index, track in enumerate(score.tracks):
        if track.is_drum and not settings.include_drums:
            dropped_drums += len(track.notes)
            continue
        arrays = track.notes.numpy()
        n = len(arrays["pitch"])
        start = arrays["time"].astype(np.float64) * scale
        columns["track"].append(np.full(n, index, dtype=np.int16))
        columns["program"].append(np.full(n, track.program, dtype=np.int16))
        columns["is_drum"].append(np.full(n, track.is_drum, dtype=bool))
        columns["pitch"].append(arrays["pitch"].astype(np.int16))
        columns["velocity"].append(arrays["velocity"].astype(np.int16))
        columns["start"].append(start)
        columns["end"].append(start + arrays["duration"].astype(np.float64) * scale)
    count = sum(len(p) for p in columns["pitch"])
    if count == 0 and dropped_drums:
        return Parsed(None, duration, "only drum notes (ingest.include_drums is false)")
    if count < settings.min_notes:
        return Parsed(
            None, duration, f"{count} notes, fewer than ingest.min_notes={settings.min_notes}"
        )
    if duration > settings.max_duration_s:
        return Parsed(
            None,
            duration,
            f"lasts {duration:.0f} s, more than ingest.max_duration_s={settings.max_duration_s:g}",
        )
    return Parsed(
        {k: np.concatenate(v) for k, v in columns.items()},
        duration,
        None,
        float(tempos[0]) if tempos else float(listed_bpm),
        max(len(tempos) - 1, 0),
    )


def ingest(
    raw: pd.DataFrame, settings: Ingest, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(notes, pieces) tables from the raw table written by the fetch stage."""
    files = list(zip(raw["data"], raw["bpm"]))  # (bytes, listed tempo)
    # disable=None: a bar on a terminal, none in DVC and CI logs.
    bar = {
        "total": len(files),
        "desc": "ingest",
        "unit": "file",
        "disable": None if progress else True,
    }
    parse = lambda file: parse_midi(file[0], settings, file[1])
    if settings.workers == 1 or len(files) < 2:
        results = [parse(f) for f in tqdm(files, **bar)]
    else:
        with ThreadPoolExecutor(settings.workers) as pool:
            results = list(tqdm(pool.map(parse, files), **bar))

    note_frames = []
    for piece, parsed in enumerate(results):
        if parsed.notes is not None:
            frame = pd.DataFrame(parsed.notes)
            frame.insert(0, "piece", piece)
            note_frames.append(frame)
    if not note_frames:
        reasons = "; ".join(f"{p}: {r.error}" for p, r in zip(raw["path"], results))
        raise NoUsableFiles(f"no usable MIDI file among {len(raw)}: {reasons[:2000]}")
    notes = pd.concat(note_frames, ignore_index=True).astype(NOTE_COLUMNS)

    pieces = raw.drop(columns=["data"]).rename(
        columns={"duration": "metadata_duration", "bpm": "metadata_bpm"}
    )
    pieces.insert(0, "id", np.arange(len(raw), dtype=np.int32))
    pieces["duration"] = [r.duration for r in results]
    pieces["note_count"] = (
        notes.groupby("piece").size().reindex(pieces["id"], fill_value=0).to_numpy()
    )
    pieces["file_tempo_bpm"] = [r.tempo_bpm for r in results]
    pieces["tempo_changes"] = [r.tempo_changes for r in results]
    pieces["status"] = [OK if r.error is None else QUARANTINED for r in results]
    pieces["error"] = [r.error for r in results]
    return notes, pieces
