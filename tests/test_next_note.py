"""What the next-note families share: the band of std ratios that real test excerpts land in."""

import numpy as np
import pandas as pd

from etude.models.next_note.metrics import excerpt_spread_band
from etude.sequences import SPLIT_CODES, NoteSequences


def sequences(step: np.ndarray, duration: np.ndarray, pieces: int) -> NoteSequences:
    """`pieces` equal test pieces holding the given notes."""
    n = len(step)
    return NoteSequences(
        np.full(n, 60, np.int16),
        step.astype(np.float32),
        duration.astype(np.float32),
        np.linspace(0, n, pieces + 1).astype(np.int64),
        np.arange(pieces, dtype=np.int32),
        np.full(pieces, SPLIT_CODES["test"], np.int8),
        {},
        np.zeros(128, np.int64),
        pd.DataFrame(columns=["piece", "path", "reason"]),
    )


def test_a_heavy_tail_widens_the_band_real_excerpts_land_in(params):
    rng = np.random.default_rng(0)
    light = rng.uniform(0.05, 0.15, 20_000)
    heavy = rng.lognormal(np.log(0.1), 1.5, 20_000)  # a few long notes carry most of the σ
    data = sequences(light, heavy, pieces=20)
    band = excerpt_spread_band(data, params.generate, seed=1)
    assert band == excerpt_spread_band(data, params.generate, seed=1)
    step = band["test_step_std_ratio_high"] - band["test_step_std_ratio_low"]
    duration = band["test_duration_std_ratio_high"] - band["test_duration_std_ratio_low"]
    assert band["test_step_std_ratio_low"] < 1 < band["test_step_std_ratio_high"] and step < 0.1, (
        band
    )
    assert duration > 3 * step, band
