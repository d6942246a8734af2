"""RhythmVAE / MelodyVAE grids on the real embedded files, odd pieces (one note, a chord, less than
a beat, drums alone) that are skipped with their reason, and the masked timeshift loss."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from etude import grids
from etude.errors import DataError
from etude.ingest import OK, QUARANTINED, ingest
from etude.models import family_named, grid_vae
from etude.params import Ingest
from etude.skips import Unusable
from etude.variants import variant_config
from tests.test_ingest import raw_table

SETTINGS = Ingest(workers=1, min_notes=1, max_duration_s=14400, include_drums=False)


@pytest.fixture(scope="module")
def notes(sample_midi):
    table, _ = ingest(
        raw_table({"Maestro_1.mid": sample_midi["Maestro_1.mid"]}), SETTINGS, progress=False
    )
    return table


def grid_settings(params, **update):
    return params.grid.model_copy(update=update)


@pytest.mark.parametrize("representation", ["rhythm", "melody"])
@pytest.mark.parametrize("steps_per_beat", [4, 12])
def test_round_trip_midi_grid_midi_on_a_real_file(notes, params, representation, steps_per_beat):
    grid = grid_settings(params, steps_per_beat=steps_per_beat, min_onsets=0)
    beats = grids.beat_grid(notes, float("nan"), grid.tempo)
    windows, starts, units = grids.encode(notes, beats, grid, representation)
    piece_unit = 60 / beats.bpm / steps_per_beat  # windows refit the beat within the tolerance
    assert np.all(np.diff(starts) > 0) and np.all(
        np.abs(units / piece_unit - 1) <= grid.tempo.local_tolerance + 1e-9
    )
    unit = units.max()
    rows = grids.rows_of(notes, grid, representation)
    decoded = pd.concat(
        [grids.decode(w, s, u, grid, representation) for w, s, u in zip(windows, starts, units)]
    )
    assert (
        len(decoded) == int((windows[:, 0] > 0.5).sum()) > 0.5 * len(notes)
    )  # collisions drop the rest
    lane = grids.lane_pitches(grid, representation)
    original = pd.DataFrame(
        {"row": rows, "start": notes["start"].to_numpy(), "velocity": notes["velocity"].to_numpy()}
    )
    for note in decoded.sample(300, random_state=0).itertuples():
        row = int(np.flatnonzero(lane == note.pitch)[0])
        same_row = original[original["row"] == row]
        nearest = same_row.iloc[int(np.argmin(np.abs(same_row["start"] - note.start)))]
        assert (
            abs(nearest["start"] - note.start) <= unit / 2
        )  # within half a step (exact up to float32)
        assert abs(nearest["velocity"] - note.velocity) <= 1  # within one velocity level
    quantised = grids.decode(windows[0], starts[0], units[0], grid, representation, grid_offset=0.0)
    steps = (quantised["start"] - starts[0]) / units[0]
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)  # grid_offset 0: on grid lines


def test_tempo_estimate_recovers_a_known_tempo_and_phase(params):
    beat = 60 / 97.0
    onsets = 0.21 + np.arange(400) * beat / 2  # eighth notes at 97 bpm, first beat at 0.21 s
    weights = np.where(np.arange(400) % 2 == 0, 1.0, 0.5)
    bpm, phase = grids.estimate_tempo(onsets, weights, params.grid.tempo)
    assert abs(bpm - 97.0) / 97.0 < 0.02 and abs(phase - 0.21) < 0.02


def test_tempo_sources_and_cell_rules(params):
    notes = pd.DataFrame(
        {
            "pitch": [60, 62, 64, 60, 72, 65, 67, 69],
            "is_drum": False,
            "velocity": [40, 90, 50, 60, 70, 80, 100, 20],
            "start": [0.0, 0.01, 0.5, 1.0, 1.0, 1.5, 2.0, 2.5],
            "end": [0.4] * 8,
        }
    )
    grid = grid_settings(params, min_onsets=5)
    fixed = grids.beat_grid(notes, 133.0, grid.tempo.model_copy(update={"source": "fixed"}))
    from_file = grids.beat_grid(notes, 133.0, grid.tempo.model_copy(update={"source": "file"}))
    assert (fixed.bpm, fixed.source, from_file.bpm, from_file.source) == (
        120.0,
        "fixed",
        133.0,
        "file",
    )
    windows, _, _ = grids.encode(notes, fixed, grid, "melody")
    # 60 and 62 share the first step in different rows: both are kept.
    assert windows.shape == (1, 4, 24, 32) and windows[0, 0].sum() == 8
    clash = pd.concat(
        [notes, notes.assign(velocity=10, start=notes["start"] + 0.02)], ignore_index=True
    )
    merged, _, _ = grids.encode(clash, fixed, grid, "melody")
    np.testing.assert_array_equal(merged[0, 1], windows[0, 1])  # the louder note of each cell wins
    skyline_grid = grid.model_copy(
        update={"melody": grid.melody.model_copy(update={"voice": "skyline"})}
    )
    skyline, _, _ = grids.encode(notes, fixed, skyline_grid, "melody")
    assert skyline[0, 0].sum() == 6  # same steps: 60/62 and 60/72; only 62 and 72 are kept
    sparse, _, _ = grids.encode(notes.iloc[:4], fixed, grid, "melody")
    assert len(sparse) == 0  # 4 onsets < min_onsets 5: dropped


def _train_timeshift_variance(windows: np.ndarray, config, epochs: int) -> float:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = grid_vae.GridVAE(config, windows.shape[1:], (0.1, 2.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    data = torch.from_numpy(windows)
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(
            len(data), generator=torch.Generator().manual_seed(epoch)
        ).split(64):
            if len(batch) > 1:
                loss, _ = grid_vae.FAMILY.loss(model, (data[batch],), config, epoch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        raw, _, _ = model(data)
        ts = model.activate(raw)[:, -1][data[:, 0] > 0.5]
    return float(ts.var())


def test_masked_loss_keeps_timeshift_variance_where_unmasked_collapses(notes, params):
    grid = grid_settings(params, min_onsets=1)
    windows, _, _ = grids.encode(
        notes, grids.beat_grid(notes, float("nan"), grid.tempo), grid, "rhythm"
    )
    target = float(windows[:, -1][windows[:, 0] > 0.5].var())  # real micro-timing: ~0.33
    small = {
        "encoder_units": 64,
        "decoder_units": 64,
        "head_units": 64,
        "dropout": 0.0,
        "lr": 0.003,
        "timeshift_ramp_epochs": 0,
        "kl": variant_config(params, "rhythm_vae").kl.model_copy(update={"anneal_epochs": 0}),
    }
    config = variant_config(params, "rhythm_vae").model_copy(update=small)
    masked = _train_timeshift_variance(
        windows, config.model_copy(update={"mask_to_onsets": True}), epochs=80
    )
    unmasked = _train_timeshift_variance(
        windows, config.model_copy(update={"mask_to_onsets": False}), epochs=80
    )
    threshold = config.collapse_variance
    # Measured: masked 0.052, unmasked 0.0028 (empty cells' zero targets pull every cell to 0).
    assert target > 0.1
    assert masked > threshold > unmasked, (target, masked, unmasked)


def _notes(starts, pitches=None, piece=0, is_drum=False) -> pd.DataFrame:
    """Notes at `starts` (seconds), 0.2 s long, velocity 90, by default in distinct lanes and
    rows."""
    starts = np.asarray(starts, dtype=float)
    pitches = [40 + 7 * i for i in range(len(starts))] if pitches is None else pitches
    return pd.DataFrame(
        {
            "piece": piece,
            "is_drum": is_drum,
            "pitch": pitches,
            "velocity": 90,
            "start": starts,
            "end": starts + 0.2,
        }
    )


@pytest.mark.parametrize(
    "starts, reason",
    [
        ([3.0], "a single onset time (one note or chord): no tempo to estimate"),
        ([1.0, 1.0, 1.0], "a single onset time (one note or chord): no tempo to estimate"),
        (
            [0.0, 0.5],
            "onsets span less than one beat at grid.tempo.min_bpm=60: no tempo to estimate",
        ),  # was IndexError
        (
            [5.0, 5.2],
            "onsets span less than one beat at grid.tempo.min_bpm=60: no tempo to estimate",
        ),
    ],
)
def test_no_tempo_is_estimated_from_one_instant_or_less_than_a_beat(params, starts, reason):
    notes = _notes(starts)
    with pytest.raises(Unusable, match=f"^{re.escape(reason)}$"):
        grids.estimate_tempo(notes["start"].to_numpy(), np.ones(len(notes)), params.grid.tempo)
    with pytest.raises(Unusable, match=re.escape(reason)):
        grids.beat_grid(notes, float("nan"), params.grid.tempo)


def test_two_notes_a_few_seconds_apart_get_a_tempo_in_range(params):
    tempo = params.grid.tempo
    bpm, phase = grids.estimate_tempo(np.array([0.0, 2.0]), np.ones(2), tempo)
    refine = 1 + 1 / (
        tempo.frame_rate * 60 / tempo.max_bpm
    )  # the refinement moves the period by <= 1 frame
    assert tempo.min_bpm / refine <= bpm <= tempo.max_bpm * refine and 0 <= phase < 60 / bpm


def test_a_file_tempo_out_of_range_is_estimated_instead(params):
    notes = _notes(0.21 + np.arange(64) * 60 / 97.0 / 2)  # eighth notes at 97 bpm
    file_tempo = params.grid.tempo.model_copy(update={"source": "file"})
    assert grids.beat_grid(notes, 133.0, file_tempo).source == "file"
    for absurd in (6e7, 1.0, float("nan")):  # 1 microsecond or a minute per beat, or no tempo event
        beats = grids.beat_grid(notes, absurd, file_tempo)
        assert beats.source == "estimate" and abs(beats.bpm - 97) < 2


@pytest.mark.parametrize("starts, onsets", [([1.0], 1), ([1.0, 1.0, 1.0], 3), ([0.0, 0.5], 2)])
def test_encode_one_two_and_simultaneous_notes_on_a_fixed_grid(params, starts, onsets):
    notes = _notes(starts)
    beats = grids.beat_grid(
        notes, float("nan"), params.grid.tempo.model_copy(update={"source": "fixed"})
    )
    for representation in ("rhythm", "melody"):
        windows, start, unit = grids.encode(
            notes, beats, grid_settings(params, min_onsets=1), representation
        )
        assert len(windows) == len(start) == len(unit) == 1 and windows[0, 0].sum() == onsets
        none, start, _ = grids.encode(
            notes, beats, grid_settings(params, min_onsets=5), representation
        )
        assert (
            none.shape == (0, *windows.shape[1:]) and len(start) == 0
        )  # fewer than min_onsets: no window


def _odd_corpus(
    real_notes: pd.DataFrame, real_split: str = "train"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A real piece (0) among a single note (1), a chord (2), two notes 2 s apart (3) and drum hits
    (4)."""
    drums = _notes(np.arange(32) * 0.25, pitches=[36, 42, 38, 42] * 8, piece=4, is_drum=True)
    notes = pd.concat(
        [
            real_notes.assign(piece=0),
            _notes([3.0], piece=1),
            _notes([1.0] * 3, piece=2),
            _notes([0.0, 2.0], piece=3),
            drums,
        ],
        ignore_index=True,
    )
    pieces = pd.DataFrame(
        {
            "id": range(6),
            "path": ["real.mid", "one.mid", "chord.mid", "two.mid", "drums.mid", "bad.mid"],
            "split": [real_split, "train", "validation", "test", "train", "train"],
            "status": [OK] * 5 + [QUARANTINED],
            "file_tempo_bpm": float("nan"),
            "time_signature": None,
        }
    )
    return notes, pieces


def test_build_skips_pieces_without_a_window_and_records_why(notes, params, tmp_path):
    odd_notes, pieces = _odd_corpus(notes)
    one_instant = "a single onset time (one note or chord): no tempo to estimate"
    few = "no 2-bar window with 5 onsets (grid.min_onsets=5)"
    rhythm = grids.build(odd_notes, pieces, params.grid, "rhythm")
    assert rhythm.skipped.to_dict("records") == [
        {"piece": 1, "path": "one.mid", "reason": one_instant},
        {"piece": 2, "path": "chord.mid", "reason": one_instant},
        {"piece": 3, "path": "two.mid", "reason": few},
    ]
    assert set(rhythm.piece) == {0, 4} and rhythm.tempo["id"].tolist() == [
        0,
        4,
    ]  # drum lanes carry rhythm
    melody = grids.build(odd_notes, pieces, params.grid, "melody")
    assert melody.skipped.set_index("piece")["reason"].to_dict() == {
        1: one_instant,
        2: one_instant,
        3: few,
        4: "only drum notes (melody grids use pitched notes only)",
    }
    assert set(melody.piece) == {0}

    rhythm.save(tmp_path / "a.npz")
    grids.build(odd_notes, pieces, params.grid, "rhythm").save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()  # deterministic
    loaded = grids.GridSet.load(tmp_path / "a.npz")
    pd.testing.assert_frame_equal(loaded.skipped, rhythm.skipped)
    np.testing.assert_array_equal(loaded.grids, rhythm.grids)


def test_no_piece_with_a_window_gives_an_empty_set_that_names_why_at_configure(
    notes, params, tmp_path
):
    odd_notes, pieces = _odd_corpus(notes)
    only_odd = pieces[pieces["id"].isin([1, 2, 3, 5])]
    rhythm = grids.build(odd_notes, only_odd, params.grid, "rhythm")
    assert rhythm.empty and rhythm.grids.shape == (0, 3, 9, 32) and rhythm.tempo.empty
    rhythm.save(tmp_path / "rhythm.npz")
    loaded = grids.GridSet.load(tmp_path / "rhythm.npz")
    assert loaded.grids.shape == (0, 3, 9, 32) and len(loaded.split_index("train")) == 0
    pd.testing.assert_frame_equal(loaded.skipped, rhythm.skipped)
    assert loaded.empty_error("rhythm_vae") == (
        f"variant rhythm_vae: {tmp_path / 'rhythm.npz'} holds no rhythm window: "
        "no rhythm window in any piece: 3 pieces skipped (2: a single onset time "
        "(one note or chord): no tempo to estimate; 1: no 2-bar window with 5 onsets "
        "(grid.min_onsets=5)); remove rhythm_vae from `variants:` in params.yaml "
        "(then run `python -m etude.pipeline`) or use a corpus with pieces it can use"
    )
    with pytest.raises(
        DataError, match=r"^variant rhythm_vae: .*rhythm\.npz holds no rhythm window"
    ):
        family_named("grid_vae").check_data(
            loaded, variant_config(params, "rhythm_vae"), "rhythm_vae"
        )
    # Drum pieces alone: melody grids are empty, and the cause says so.
    drums_only = grids.build(odd_notes, pieces[pieces["id"] == 4], params.grid, "melody")
    assert drums_only.empty and drums_only.empty_error("melody_vae").startswith(
        "variant melody_vae: the melody grid set holds no melody window: "
        "no piece has pitched notes (a drum corpus?): "
        "1 piece skipped (1: only drum notes (melody grids use pitched notes only)); "
        "remove melody_vae"
    )
    assert drums_only.empty_error("melody_vae").endswith("or use a corpus with pitched notes")
    assert grids.build(odd_notes, pieces, params.grid, "rhythm").empty_error("rhythm_vae") == ""
    _, test_only = _odd_corpus(notes, real_split="test")
    with pytest.raises(
        ValueError, match=r"^the training split has no melody window; .*data\.midi_dir_split"
    ):
        grids.build(odd_notes, test_only, params.grid, "melody")
