"""Ingest: parse every MIDI file of the raw table into a notes table and a pieces table.

Parsing uses symusic (a C++ MIDI parser, about 150x faster than pretty_midi on MAESTRO) in a pool
of threads: symusic releases the GIL while parsing, and threads avoid copying results between
processes, which cost more than the parsing itself. A file that cannot be used is quarantined with
its reason in the pieces table; the run fails only when no usable file is left.

Every later stage follows the same rule for the usable pieces: a piece it cannot use raises `Unusable`
with the reason, which the stage records in its own output (`skipped`: piece, path, reason), prints,
and goes on. When nothing is left, a representation stage writes its output empty (skip records kept)
and prints why (`empty_warning`): the DAG goes on, and only a variant reading it stops, at configure
(`empty_error`), naming the file, the cause and the fix.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import symusic
from tqdm import tqdm

from etude.params import Ingest

NOTE_COLUMNS = {"piece": "int32", "track": "int16", "program": "int16", "is_drum": "bool",
                "pitch": "int16", "velocity": "int16", "start": "float64", "end": "float64"}
OK, QUARANTINED = "ok", "quarantined"
SKIPPED_COLUMNS = ("piece", "path", "reason")
ONLY_DRUM_NOTES = "only drum notes"  # how every stage's reason for a piece of drum notes alone begins
MIDI_DEFAULT_BPM = 120.0  # the tempo of a MIDI file without a tempo event
# A stage whose statistics need training data names the settings that decide the split.
TRAINING_SPLIT_HINT = ("statistics come from the training split: give it usable pieces through data.midi_dir_split "
                       "(midi_dir source), data.sample.validation/test (maestro-sample) or the metadata's split "
                       "column (maestro)")


class NoUsableFiles(RuntimeError):
    """Every file of the source was quarantined."""


class Unusable(ValueError):
    """A piece that a stage after ingest cannot use; the message is the reason it records."""


def usable(pieces: pd.DataFrame) -> pd.DataFrame:
    """The pieces that ingest did not quarantine."""
    return pieces[pieces["status"] == OK]


def one_line(reason: str) -> str:
    """A reason as one line: an exception's message may span several, and a stage prints one per piece."""
    return " ".join(reason.split())


def skipped_table(pieces: pd.DataFrame, reasons: dict[int, str]) -> pd.DataFrame:
    """piece, path and reason of each skipped piece id, in id order."""
    ids = sorted(int(i) for i in reasons)
    path_of = dict(zip(pieces["id"], pieces["path"]))
    return pd.DataFrame({"piece": np.array(ids, dtype=np.int32), "path": [str(path_of[i]) for i in ids],
                         "reason": [one_line(reasons[i]) for i in ids]}, columns=list(SKIPPED_COLUMNS))


def skipped_arrays(skipped: pd.DataFrame) -> dict[str, np.ndarray]:
    """The skip records as npz arrays: fixed-width unicode, so no pickle and the same bytes for the same records."""
    return {"skipped_piece": skipped["piece"].to_numpy(np.int32), "skipped_path": skipped["path"].to_numpy(str),
            "skipped_reason": skipped["reason"].to_numpy(str)}


def skipped_from(arrays) -> pd.DataFrame:
    """The skip records of an npz written with `skipped_arrays`."""
    return pd.DataFrame({"piece": arrays["skipped_piece"], "path": arrays["skipped_path"].tolist(),
                         "reason": arrays["skipped_reason"].tolist()}, columns=list(SKIPPED_COLUMNS))


def skip_counts(skipped: pd.DataFrame, most: int = 5) -> str:
    """'3 pieces skipped (2: reason; 1: reason)': the reasons counted, most common first."""
    counts = skipped["reason"].value_counts()
    # Most common first, ties by text: the same message for the same corpus.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = "; ".join(f"{n}: {reason}" for reason, n in ranked[:most])
    more = f"; and {len(ranked) - most} other reasons" if len(ranked) > most else ""
    plural = "piece" if len(skipped) == 1 else "pieces"
    return f"{len(skipped)} {plural} skipped ({shown}{more})"


def nothing_left(what: str, skipped: pd.DataFrame, most: int = 5) -> str:
    """Why a stage has no output: 'no rhythm window in any piece: 3 pieces skipped (2: reason; 1: reason)'."""
    if skipped.empty:
        return f"no {what}: the pieces table has no usable piece"
    return f"no {what} in any piece: {skip_counts(skipped, most)}"


def drum_skips(skipped: pd.DataFrame) -> int:
    """How many pieces were skipped for holding drum notes alone (every stage's reason starts alike)."""
    return int(skipped["reason"].str.startswith(ONLY_DRUM_NOTES).sum()) if len(skipped) else 0


def why_empty(what: str, skipped: pd.DataFrame) -> str:
    """Why a representation holds no `what`, in one line: the cause, then the reasons counted."""
    if skipped.empty:
        return nothing_left(what, skipped)
    drums = drum_skips(skipped)
    if drums == len(skipped):
        return f"no piece has pitched notes (a drum corpus?): {skip_counts(skipped)}"
    if drums:
        return f"every piece skipped, {drums} for holding drum notes alone (a drum corpus?): {skip_counts(skipped)}"
    return nothing_left(what, skipped)


def empty_warning(stage: str, target: str, what: str, skipped: pd.DataFrame) -> str:
    """The line a stage prints when it writes an empty representation instead of failing: the DAG goes
    on, and only the variants that read it stop, at configure (`empty_error`)."""
    return (f"{stage}: WARNING: {why_empty(what, skipped)}: {target} holds no {what}; "
            "variants reading it will stop at configure")


def empty_error(variant: str, target: str, what: str, skipped: pd.DataFrame) -> str:
    """Why a variant cannot train on an empty representation, and the two ways out."""
    other = "a corpus with pitched notes" if drum_skips(skipped) else "a corpus with pieces it can use"
    return (f"variant {variant}: {target} holds no {what}: {why_empty(what, skipped)}; remove {variant} from "
            f"`variants:` in params.yaml (then run `python -m etude.pipeline`) or use {other}")


@dataclass
class Parsed:
    notes: dict[str, np.ndarray] | None
    duration: float
    error: str | None
    tempo_bpm: float = float("nan")  # the file's first tempo, else the listed one; meaningless for performance MIDI
    tempo_changes: int = 0


def parse_midi(payload: bytes, settings: Ingest, listed_bpm: float = float("nan")) -> Parsed:
    """Notes of one MIDI file in seconds, or the reason it cannot be used. `listed_bpm`: the tempo the
    source's metadata lists (groove: info.csv bpm), used when the file has no tempo event."""
    if not payload:
        return Parsed(None, 0.0, "empty file")
    if not payload.startswith(b"MThd"):
        return Parsed(None, 0.0, "not a MIDI file (no MThd header)")
    try:
        score = symusic.Score.from_midi(payload, ttype="second")
    except Exception as err:  # symusic reports every malformed-file case as RuntimeError
        return Parsed(None, 0.0, f"unreadable MIDI: {err}")
    tempos = [t.qpm for t in score.tempos]
    # Without a tempo event the seconds assume the MIDI default; a listed tempo times the ticks instead.
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
        return Parsed(None, duration, f"{count} notes, fewer than ingest.min_notes={settings.min_notes}")
    if duration > settings.max_duration_s:
        return Parsed(None, duration,
                      f"lasts {duration:.0f} s, more than ingest.max_duration_s={settings.max_duration_s:g}")
    return Parsed({k: np.concatenate(v) for k, v in columns.items()}, duration, None,
                  float(tempos[0]) if tempos else float(listed_bpm), max(len(tempos) - 1, 0))


def ingest(raw: pd.DataFrame, settings: Ingest, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(notes, pieces) tables from the raw table written by the fetch stage."""
    files = list(zip(raw["data"], raw["bpm"]))  # (bytes, listed tempo)
    # disable=None: a bar on a terminal, none in DVC and CI logs.
    bar = {"total": len(files), "desc": "ingest", "unit": "file", "disable": None if progress else True}
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

    pieces = raw.drop(columns=["data"]).rename(columns={"duration": "metadata_duration", "bpm": "metadata_bpm"})
    pieces.insert(0, "id", np.arange(len(raw), dtype=np.int32))
    pieces["duration"] = [r.duration for r in results]
    pieces["note_count"] = notes.groupby("piece").size().reindex(pieces["id"], fill_value=0).to_numpy()
    pieces["file_tempo_bpm"] = [r.tempo_bpm for r in results]
    pieces["tempo_changes"] = [r.tempo_changes for r in results]
    pieces["status"] = [OK if r.error is None else QUARANTINED for r in results]
    pieces["error"] = [r.error for r in results]
    return notes, pieces
