"""Writing generated notes as MIDI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pretty_midi


def write_notes(notes: pd.DataFrame, path: Path, program: int, is_drum: bool = False) -> None:
    """One instrument of `program` with the notes' pitch, velocity, start and end (seconds); a drum
    instrument (channel 10, pitches are GM drum notes) when `is_drum`."""
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
    midi.write(str(path))
