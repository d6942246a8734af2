"""MP3 previews of samples for the report: small enough that a self-contained page holds every
variant's.

Constant bitrate, so a clip's size is its bitrate times its length (which bounds the page) and
browsers know its duration from its size without a seek table. LAME (through libsndfile) gives
the same bytes for the same samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from etude import audio
from etude.params import Audio, ReportAudio


def encode_mp3(
    samples: np.ndarray, sample_rate: int, target: Path | BinaryIO, settings: ReportAudio
) -> None:
    """Mono audio as a constant-bitrate MP3 file or into a binary buffer; scaled down to full scale
    if it exceeds it (dense drum patterns do), as the player would clip it."""
    peak = float(np.abs(samples).max(initial=0.0))
    soundfile.write(
        target,
        samples / peak if peak > 1 else samples,
        sample_rate,
        format="MP3",
        subtype="MPEG_LAYER_III",
        compression_level=settings.compression_level,
        bitrate_mode="CONSTANT",
    )


def render_file(midi_path: Path, settings: Audio, preview: ReportAudio, soundfont: Path) -> Path:
    """`<stem>.mp3` beside a MIDI file: its first `preview.max_seconds` rendered with the
    SoundFont."""
    samples = audio.render(
        midi_path.read_bytes(), settings, soundfont, preview.sample_rate, preview.max_seconds
    )
    target = midi_path.with_suffix(".mp3")
    encode_mp3(samples, preview.sample_rate, target, preview)
    return target
