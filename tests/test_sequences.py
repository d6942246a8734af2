"""Note sequences: the tutorial's (pitch, step, duration), per piece, statistics from train only."""

import numpy as np
import pandas as pd
import pytest

from etude.errors import DataError
from etude.ingest import OK, QUARANTINED
from etude.models import family_named
from etude.params import Tokenize
from etude.sequences import NoteSequences, build
from etude.variants import variant_config


def test_steps_durations_chords_and_train_only_stats():
    notes = pd.DataFrame(
        {
            "piece": [0, 0, 0, 1, 1],
            "is_drum": False,
            "pitch": [64, 60, 67, 50, 52],
            "velocity": 80,
            "start": [1.0, 1.0, 1.5, 0.2, 0.7],
            "end": [2.0, 1.5, 1.75, 0.4, 5.0],
        }
    )
    pieces = pd.DataFrame(
        {"id": [0, 1], "path": ["a.mid", "b.mid"], "split": ["train", "test"], "status": [OK, OK]}
    )
    seqs = build(notes, pieces, Tokenize(sort_chords_by_pitch=True))
    assert seqs.pitch.tolist() == [60, 64, 67, 50, 52]  # chord sorted by pitch
    np.testing.assert_allclose(seqs.step, [0, 0, 0.5, 0, 0.5])  # chord: step 0; new piece: 0
    np.testing.assert_allclose(seqs.duration, [0.5, 1.0, 0.25, 0.2, 4.3], rtol=1e-6)
    assert seqs.offsets.tolist() == [0, 3, 5]
    # The test piece's 4.3 s note does not leak into the statistics.
    np.testing.assert_allclose(seqs.stats["duration_mean"], np.mean([0.5, 1.0, 0.25]), rtol=1e-6)
    assert seqs.train_pitch_counts[60] == 1 and seqs.train_pitch_counts[50] == 0
    assert (
        seqs.window_starts("train", 2).tolist() == [0, 1]
        and seqs.window_starts("test", 3).size == 0
    )
    assert seqs.skipped.empty


def _drum_corpus() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pieces 0 (pitched, train), 1 (drums alone, train), 2 (quarantined), 3 (pitched and drums,
    test)."""
    notes = pd.DataFrame(
        {
            "piece": [0, 0, 1, 1, 3, 3],
            "is_drum": [False, False, True, True, True, False],
            "pitch": [60, 62, 36, 38, 42, 0],
            "velocity": 80,
            "start": [0.0, 0.5, 0.0, 0.5, 0.0, 0.0],
            "end": [0.5, 0.5, 0.1, 0.6, 0.1, 1.0],
        }
    )
    pieces = pd.DataFrame(
        {
            "id": [0, 1, 2, 3],
            "path": ["p.mid", "drums.mid", "bad.mid", "mixed.mid"],
            "split": ["train", "train", "train", "test"],
            "status": [OK, OK, QUARANTINED, OK],
        }
    )
    return notes, pieces


def test_a_drum_only_piece_is_skipped_and_recorded_and_the_file_is_deterministic(tmp_path):
    notes, pieces = _drum_corpus()
    seqs = build(notes, pieces, Tokenize(sort_chords_by_pitch=True))
    assert seqs.piece_ids.tolist() == [0, 3] and seqs.pitch.tolist() == [60, 62, 0]
    assert seqs.duration.tolist() == [0.5, 0.0, 1.0]  # a zero-length note is kept
    assert seqs.skipped.to_dict("records") == [
        {
            "piece": 1,
            "path": "drums.mid",
            "reason": "only drum notes (tokenize keeps pitched notes only)",
        }
    ]
    seqs.save(tmp_path / "a.npz")
    build(notes, pieces, Tokenize(sort_chords_by_pitch=True)).save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = NoteSequences.load(tmp_path / "a.npz")
    pd.testing.assert_frame_equal(loaded.skipped, seqs.skipped)


def test_no_pitched_note_writes_an_empty_set_that_names_why_at_configure(tmp_path, params):
    """A drum corpus: the set is written empty with its skip records, and a variant reading it is
    told the file, the cause and the fix; statistics need the training split, so none there still
    fails."""
    notes, pieces = _drum_corpus()
    seqs = build(notes, pieces[pieces["id"].isin([1, 2])], Tokenize(sort_chords_by_pitch=True))
    assert seqs.empty and seqs.offsets.tolist() == [0] and seqs.stats["train_notes"] == 0
    seqs.save(tmp_path / "notes.npz")
    loaded = NoteSequences.load(tmp_path / "notes.npz")
    assert loaded.empty and len(loaded.pitch) == 0 and loaded.features().shape == (0, 3)
    assert loaded.skipped.to_dict("records") == [
        {
            "piece": 1,
            "path": "drums.mid",
            "reason": "only drum notes (tokenize keeps pitched notes only)",
        }
    ]
    assert loaded.window_starts("train", 26).size == 0 and loaded.split_mask("test").size == 0
    assert loaded.empty_error("rnn_baseline") == (
        f"variant rnn_baseline: {tmp_path / 'notes.npz'} holds no pitched note: "
        "no piece has pitched notes (a drum corpus?): 1 piece skipped "
        "(1: only drum notes (tokenize keeps pitched notes only)); remove rnn_baseline "
        "from `variants:` in params.yaml (then run `python -m etude.pipeline`) "
        "or use a corpus with pitched notes"
    )
    with pytest.raises(
        DataError, match=r"^variant rnn_baseline: .*notes\.npz holds no pitched note: no piece has"
    ):
        family_named("note_rnn").check_data(
            loaded, variant_config(params, "rnn_baseline"), "rnn_baseline"
        )
    assert (
        build(notes, pieces, Tokenize(sort_chords_by_pitch=True)).empty_error("rnn_baseline") == ""
    )
    with pytest.raises(
        ValueError, match=r"the training split has no pitched note; .*data\.midi_dir_split"
    ):
        build(notes, pieces[pieces["id"] != 0], Tokenize(sort_chords_by_pitch=True))
