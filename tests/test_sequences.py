"""Note sequences: the tutorial's (pitch, step, duration), per piece, statistics from train only."""

import numpy as np
import pandas as pd

from etude.params import Tokenize
from etude.sequences import build


def test_steps_durations_chords_and_train_only_stats():
    notes = pd.DataFrame({
        "piece": [0, 0, 0, 1, 1], "is_drum": False, "pitch": [64, 60, 67, 50, 52],
        "velocity": 80, "start": [1.0, 1.0, 1.5, 0.2, 0.7], "end": [2.0, 1.5, 1.75, 0.4, 5.0],
    })
    pieces = pd.DataFrame({"id": [0, 1], "split": ["train", "test"], "status": ["ok", "ok"]})
    seqs = build(notes, pieces, Tokenize(sort_chords_by_pitch=True))
    assert seqs.pitch.tolist() == [60, 64, 67, 50, 52]  # chord sorted by pitch
    np.testing.assert_allclose(seqs.step, [0, 0, 0.5, 0, 0.5])  # chord: step 0; new piece: 0
    np.testing.assert_allclose(seqs.duration, [0.5, 1.0, 0.25, 0.2, 4.3], rtol=1e-6)
    assert seqs.offsets.tolist() == [0, 3, 5]
    # The test piece's 4.3 s note does not leak into the statistics.
    np.testing.assert_allclose(seqs.stats["duration_mean"], np.mean([0.5, 1.0, 0.25]), rtol=1e-6)
    assert seqs.train_pitch_counts[60] == 1 and seqs.train_pitch_counts[50] == 0
    assert seqs.window_starts("train", 2).tolist() == [0, 1] and seqs.window_starts("test", 3).size == 0
