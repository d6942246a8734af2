"""Generated notes as MIDI, and a MIDI file's notes (a primer)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pretty_midi
import symusic

from etude.errors import DataError


def write_notes(notes: pd.DataFrame, path: Path, program: int, is_drum: bool = False) -> None:
    """One instrument of `program` with the notes' pitch, velocity, start and end (seconds); a drum
    instrument (channel 10, pitches are GM drum notes) when `is_drum`."""
    Path(path).write_bytes(midi_bytes(notes, program, is_drum))


def midi_bytes(notes: pd.DataFrame, program: int, is_drum: bool = False) -> bytes:
    """`write_notes`'s file, as bytes."""
    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program, is_drum=is_drum)
    # A zero-length note has no sound; it lasts one MIDI tick at the default resolution instead.
    tick = midi.tick_to_time(1)
    for n in notes.itertuples(index=False):
        instrument.notes.append(
            pretty_midi.Note(
                int(n.velocity), int(n.pitch), float(n.start), float(max(n.end, n.start + tick))
            )
        )
    midi.instruments.append(instrument)
    out = io.BytesIO()
    midi.write(out)
    return out.getvalue()


def read_notes(payload: bytes, source: str) -> pd.DataFrame:
    """The pitched notes of a MIDI file (pitch, velocity, start, end in seconds), sorted by start
    then pitch; `source` names the file in errors."""
    if not payload.startswith(b"MThd"):
        raise DataError(f"{source}: not a MIDI file (no MThd header)")
    try:
        score = symusic.Score.from_midi(payload, ttype="second")
    except RuntimeError as err:
        raise DataError(f"{source}: unreadable MIDI: {err}") from None
    frames = []
    for track in score.tracks:
        if track.is_drum:
            continue
        arrays = track.notes.numpy()
        start = arrays["time"].astype(np.float64)
        frames.append(
            pd.DataFrame(
                {
                    "pitch": arrays["pitch"].astype(np.int64),
                    "velocity": arrays["velocity"].astype(np.int64),
                    "start": start,
                    "end": start + arrays["duration"].astype(np.float64),
                }
            )
        )
    notes = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if notes.empty:
        raise DataError(f"{source}: no pitched note")
    return notes.sort_values(["start", "pitch"], kind="stable", ignore_index=True)
