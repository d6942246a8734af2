"""The data stages on a folder of real and odd MIDI files, run as the pipeline runs them.

Every odd file is either quarantined by ingest or skipped by the stage that cannot use it, with its
reason printed and recorded in that stage's output; usable pieces are kept. A representation stage
left with no piece writes its output empty and warns in one line naming why: the DAG goes on, and
configure@<variant> stops a variant that reads it, naming the file, the cause and the fix.
"""

import io
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pretty_midi
import pytest
import symusic

from etude.grids import GridSet
from etude.ingest import OK
from etude.mel import MelSet
from etude.sequences import NoteSequences
from tests.conftest import make_project, run

SPLIT = {"validation": 0.25, "test": 0.25}
# Real MAESTRO performances (their first minute), named so that hash_split gives each split one.
MAESTRO = {
    "maestro_a.mid": ("Maestro_1.mid", "train"),
    "maestro_1.mid": ("Maestro_3.mid", "validation"),
    "maestro_b.mid": ("Maestro_10.mid", "test"),
}
NO_WINDOW = "no 2-bar window with 5 onsets (grid.min_onsets=5)"
ONE_INSTANT = "a single onset time (one note or chord): no tempo to estimate"
UNDER_A_BEAT = "onsets span less than one beat at grid.tempo.min_bpm=60: no tempo to estimate"
TOO_SHORT = "audio shorter than one mel segment (mel.segment_s=3 s)"
SILENT = (
    "silent: every segment of its first 12 s (mel.max_seconds_per_piece) "
    "is below mel.min_level_db=-60 dB"
)


def pretty(notes, is_drum: bool = False) -> bytes:
    """A MIDI file written by pretty_midi: one instrument with (start, end, pitch, velocity)
    notes."""
    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=0, is_drum=is_drum)  # is_drum: channel 10
    instrument.notes = [
        pretty_midi.Note(velocity, pitch, start, end) for start, end, pitch, velocity in notes
    ]
    midi.instruments.append(instrument)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def zero_length(count: int) -> bytes:
    """Notes whose on and off share a tick, written by symusic (pretty_midi writes the off first,
    and symusic then drops the note when it parses the file)."""
    score = symusic.Score(1000, ttype="second")
    track = symusic.Track(program=0, ttype="second")
    for i in range(count):
        track.notes.append(symusic.Note(i * 0.5, 0.0, 55 + i % 12, 90, ttype="second"))
    score.tracks.append(track)
    return score.dumps_midi()


def first_minute(data: bytes) -> bytes:
    return symusic.Score.from_midi(data, ttype="second").clip(0, 60, clip_end=True).dumps_midi()


ODD = {
    "drums.mid": lambda: pretty(
        [(i * 0.25, i * 0.25 + 0.1, (36, 42, 38, 42)[i % 4], 100) for i in range(32)], is_drum=True
    ),
    "two_notes.mid": lambda: pretty([(0.0, 0.4, 60, 80), (0.5, 0.9, 64, 80)]),
    "chord.mid": lambda: pretty([(1.0, 1.5, pitch, 80) for pitch in (60, 64, 67)]),
    "short.mid": lambda: pretty(
        [(0.0, 0.8, 60, 80), (1.0, 1.8, 62, 80), (2.0, 2.8, 64, 80)]
    ),  # 2.8 s
    "quiet.mid": lambda: pretty(
        [(i * 0.5, i * 0.5 + 0.4, 60 + i % 5, 1) for i in range(24)]
    ),  # velocity 1
    "zero_length.mid": lambda: zero_length(32),
    "extremes.mid": lambda: pretty(
        [(i * 0.5, i * 0.5 + 0.4, (0, 127)[i % 2], 90) for i in range(32)]
    ),
}


def midi_dir(root: Path, sample_midi: dict[str, bytes], odd: list[str], real: list[str]) -> Path:
    folder = root / "midi"
    folder.mkdir()
    for name in odd:
        (folder / name).write_bytes(ODD[name]())
    for name in real:
        (folder / name).write_bytes(first_minute(sample_midi[MAESTRO[name][0]]))
    return folder


def project(tmp_path: Path, folder: Path, include_drums: bool = False) -> Path:
    override = {
        "data": {"source": "midi_dir", "path": str(folder), "midi_dir_split": SPLIT},
        "ingest": {"include_drums": include_drums},
        "mel": {"max_seconds_per_piece": 12, "workers": 2},
    }
    return make_project(tmp_path / "project", override)


def stage(name: str, cwd: Path, check: bool = True):
    return run([sys.executable, "-m", f"stages.{name}"], cwd, check=check)


def printed(done, stage_name: str) -> list[tuple[str, str]]:
    """(path, reason) of each `<stage>: skipped <path>: <reason>` line, sorted."""
    return sorted(
        re.findall(rf"^{stage_name}: (?:skipped|quarantined) (\S+): (.*)$", done.stdout, flags=re.M)
    )


def records(skipped: pd.DataFrame) -> list[tuple[str, str]]:
    assert skipped.columns.tolist() == ["piece", "path", "reason"]
    return sorted(zip(skipped["path"], skipped["reason"]))


@pytest.mark.parametrize("include_drums", [False, True])
def test_each_odd_file_is_quarantined_or_skipped_with_its_reason(
    tmp_path, sample_midi, include_drums
):
    root = project(
        tmp_path, midi_dir(tmp_path, sample_midi, list(ODD), list(MAESTRO)), include_drums
    )
    drums = {
        True: {
            "tokenize": "only drum notes (tokenize keeps pitched notes only)",
            "melody": "only drum notes (melody grids use pitched notes only)",
        },
        False: {"ingest": "only drum notes (ingest.include_drums is false)"},
    }[include_drums]
    only_drums = {stage_name: [("drums.mid", reason)] for stage_name, reason in drums.items()}
    stage("fetch", root)
    ingest = stage("ingest", root)
    pieces = pd.read_parquet(root / "data/ingest/pieces.parquet").set_index("path")
    assert {name: pieces.loc[name, "split"] for name in MAESTRO} == {
        n: split for n, (_, split) in MAESTRO.items()
    }
    assert printed(ingest, "ingest") == only_drums.get("ingest", [])
    usable = pieces[pieces["status"] == OK]
    id_of = pieces["id"].to_dict()

    tokenize = stage("tokenize", root)
    seqs = NoteSequences.load(root / "data/tokens/notes.npz")
    assert printed(tokenize, "tokenize") == records(seqs.skipped) == only_drums.get("tokenize", [])
    assert len(seqs.piece_ids) + len(seqs.skipped) == len(
        usable
    )  # every other piece, odd or not, is kept
    notes_of = {
        int(p): slice(seqs.offsets[i], seqs.offsets[i + 1]) for i, p in enumerate(seqs.piece_ids)
    }
    assert set(seqs.pitch[notes_of[id_of["extremes.mid"]]]) == {0, 127}
    assert (seqs.duration[notes_of[id_of["zero_length.mid"]]] == 0).all()
    assert len(seqs.pitch[notes_of[id_of["two_notes.mid"]]]) == 2

    grids = stage("grids", root)
    expected = {"two_notes.mid": UNDER_A_BEAT, "chord.mid": ONE_INSTANT, "short.mid": NO_WINDOW}
    for representation in ("rhythm", "melody"):
        gridset = GridSet.load(root / f"data/tokens/{representation}.npz")
        skipped = sorted(expected.items()) + only_drums.get(representation, [])
        assert records(gridset.skipped) == sorted(skipped)
        assert gridset.skipped["piece"].tolist() == sorted(id_of[p] for p, _ in skipped)
        assert set(gridset.piece) == {id_of[p] for p in usable.index} - {
            id_of[p] for p, _ in skipped
        }
    # One line per piece and reason; a piece skipped by one representation only says which.
    drum_lines = [(p, f"{r} (melody only)") for p, r in only_drums.get("melody", [])]
    assert printed(grids, "grids") == sorted(sorted(expected.items()) + drum_lines)

    mel = stage("mel", root)
    expected = [("chord.mid", TOO_SHORT), ("quiet.mid", SILENT), ("two_notes.mid", TOO_SHORT)]
    expected = sorted(expected + only_drums.get("mel", []))
    data = MelSet(root / "data/mel")
    assert printed(mel, "mel") == records(data.skipped) == expected
    drum_kit = (
        {"drums.mid"} if include_drums else set()
    )  # drum tracks render through the SoundFont's kit
    assert set(data.pieces["path"]) == {
        "short.mid",
        "zero_length.mid",
        "extremes.mid",
        *drum_kit,
        *MAESTRO,
    }
    assert set(data.segments["piece"]) == set(data.pieces["piece"])
    table = pd.read_parquet(root / "data/mel/pieces.parquet")
    assert len(table) == len(usable) and table["reason"].notna().sum() == len(expected)

    # The report stage gathers every stage's skipped pieces with the stage's reason.
    gathered = run(
        [
            sys.executable,
            "-c",
            "from stages.report import skipped_pieces; "
            "print(skipped_pieces().to_json(orient='records'))",
        ],
        root,
    ).stdout
    listed = {(row["stage"], row["path"], row["reason"]) for row in json.loads(gathered)}
    assert ("mel", "quiet.mid", SILENT) in listed and (
        "grids (rhythm)",
        "chord.mid",
        ONE_INSTANT,
    ) in listed
    assert len(listed) == len(records(seqs.skipped)) + len(expected) + sum(
        len(GridSet.load(root / f"data/tokens/{r}.npz").skipped) for r in ("rhythm", "melody")
    )


def test_one_usable_piece_among_odd_files_is_enough(tmp_path, sample_midi):
    odd = ["drums.mid", "two_notes.mid", "chord.mid", "short.mid"]
    root = project(tmp_path, midi_dir(tmp_path, sample_midi, odd, ["maestro_a.mid"]))
    for name in ("fetch", "ingest", "tokenize"):
        stage(name, root)
    grids = stage("grids", root)
    real = int(
        pd.read_parquet(root / "data/ingest/pieces.parquet")
        .set_index("path")
        .loc["maestro_a.mid", "id"]
    )
    for representation in ("rhythm", "melody"):
        gridset = GridSet.load(root / f"data/tokens/{representation}.npz")
        assert (
            set(gridset.piece) == {real}
            and len(gridset.skipped) == 3
            and len(gridset.split_index("train")) > 0
        )
    assert "grids: skipped two_notes.mid: " + UNDER_A_BEAT in grids.stdout.splitlines()


def test_no_piece_with_a_window_writes_empty_grids_and_configure_names_why(tmp_path, sample_midi):
    root = project(
        tmp_path,
        midi_dir(
            tmp_path, sample_midi, ["drums.mid", "two_notes.mid", "chord.mid", "short.mid"], []
        ),
    )
    stage("fetch", root)
    stage("ingest", root)
    done = stage("grids", root)
    because = (
        "no rhythm window in any piece: 3 pieces skipped "
        f"(1: {ONE_INSTANT}; 1: {NO_WINDOW}; 1: {UNDER_A_BEAT})"
    )
    assert (
        f"grids: WARNING: {because}: data/tokens/rhythm.npz holds no rhythm window; "
        "variants reading it will stop at configure"
    ) in done.stdout.splitlines()
    for representation in ("rhythm", "melody"):
        gridset = GridSet.load(root / f"data/tokens/{representation}.npz")
        assert gridset.empty and records(gridset.skipped) == sorted(
            [("chord.mid", ONE_INSTANT), ("short.mid", NO_WINDOW), ("two_notes.mid", UNDER_A_BEAT)]
        )
    # The variant that reads the empty grids stops before any training, in one line naming why.
    failed = run(
        [sys.executable, "-m", "stages.configure", "--variant", "rhythm_vae"], root, check=False
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip() == (
        "configure: error: variant rhythm_vae: data/tokens/rhythm.npz holds no rhythm window: "
        f"{because}; remove rhythm_vae from `variants:` in params.yaml "
        "(then run `python -m etude.pipeline`) or use a corpus with pieces it can use"
    )
    assert not (root / "configs/rhythm_vae.json").exists()


def test_a_drum_corpus_writes_empty_note_sequences_and_configure_names_why(tmp_path, sample_midi):
    root = project(tmp_path, midi_dir(tmp_path, sample_midi, ["drums.mid"], []), include_drums=True)
    for name in ("fetch", "ingest"):
        stage(name, root)
    done = stage("tokenize", root)
    drums = "only drum notes (tokenize keeps pitched notes only)"
    assert done.stdout.splitlines()[-2:] == [
        "tokenize: WARNING: no piece has pitched notes (a drum corpus?): "
        f"1 piece skipped (1: {drums}): "
        "data/tokens/notes.npz holds no pitched note; variants reading it will stop at configure",
        "tokenize: 0 notes in 0 pieces, 1 skipped -> data/tokens/notes.npz",
    ]
    seqs = NoteSequences.load(root / "data/tokens/notes.npz")
    assert seqs.empty and records(seqs.skipped) == [("drums.mid", drums)]
    failed = run(
        [sys.executable, "-m", "stages.configure", "--variant", "rnn_baseline"], root, check=False
    )
    assert failed.returncode == 1 and failed.stderr.strip() == (
        "configure: error: variant rnn_baseline: data/tokens/notes.npz holds no pitched note: "
        f"no piece has pitched notes (a drum corpus?): 1 piece skipped (1: {drums}); "
        "remove rnn_baseline from `variants:` in params.yaml "
        "(then run `python -m etude.pipeline`) or use a corpus with pitched notes"
    )
