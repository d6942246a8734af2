"""Sample-level music metrics on hand-made excerpts whose answers are worked out by hand, and the
set-level OA / KLD comparison on sets whose overlap is known: identical, disjoint, nearer and
farther, degenerate."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from etude import music

BEAT = 0.5  # s: 120 qpm, the clock beat of performance MIDI
STEPS = 4  # steps per beat: measures of 16 steps


def excerpt(*notes, drums=None) -> pd.DataFrame:
    """Notes as (pitch, start, end) in seconds."""
    table = pd.DataFrame(notes, columns=["pitch", "start", "end"]).astype(
        {"pitch": int, "start": float, "end": float}
    )
    table["velocity"] = 64
    if drums is not None:
        table["is_drum"] = drums
    return table


def melody(pitches, step=BEAT, length=BEAT) -> pd.DataFrame:
    return excerpt(*((p, i * step, i * step + length) for i, p in enumerate(pitches)))


def onsets_at(steps, length_s=0.05) -> pd.DataFrame:
    """Short notes at onset steps of 1/STEPS beat."""
    return excerpt(*((60, s * BEAT / STEPS, s * BEAT / STEPS + length_s) for s in steps))


def describe(notes, **kw):
    return music.describe(notes, BEAT, STEPS, **kw)


C_MAJOR = [60, 62, 64, 65, 67, 69, 71]


def test_c_major_scale():
    d = describe(melody(C_MAJOR))
    assert d["scale_consistency"] == 1.0
    assert d["used_pitch_classes"] == d["used_pitches"] == 7
    assert d["pitch_range"] == 11
    assert d["pitch_class_entropy"] == pytest.approx(math.log2(7))
    assert d["polyphony"] == 1.0
    assert d["note_density"] == pytest.approx(7 / 3.5)
    assert d["mean_ioi"] == d["mean_duration"] == 0.5
    assert d["repeated_pitch_rate"] == 0.0
    # Every note ends on the next beat line, which MusPy counts as occupied: no empty beat among 8.
    assert d["empty_beat_rate"] == 0.0
    expected = np.zeros(12)
    expected[[0, 2, 4, 5, 7, 9, 11]] = 1 / 7
    np.testing.assert_allclose(d["pitch_class_histogram"], expected)
    transition = d["pitch_class_transition"]
    assert transition.sum() == pytest.approx(1) and transition[0, 2] == transition[
        9, 11
    ] == pytest.approx(1 / 6)


def test_chromatic_run():
    d = describe(melody(range(60, 72)))
    assert d["pitch_class_entropy"] == pytest.approx(math.log2(12))
    assert d["used_pitch_classes"] == 12
    assert d["scale_consistency"] == pytest.approx(7 / 12)


def test_minor_key_and_entropy_of_unequal_counts():
    a_minor = [57, 59, 60, 62, 64, 65, 67]  # natural minor: the pitch classes of its relative major
    assert describe(melody([*a_minor, 61]))["scale_consistency"] == pytest.approx(7 / 8)
    d = describe(melody([60, 60, 60, 67]))  # p = 3/4, 1/4
    assert d["pitch_class_entropy"] == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    )


def test_polyphony_of_a_chord_and_a_gap():
    chord = [(60, 0.0, BEAT), (64, 0.0, BEAT), (67, 0.0, BEAT)]
    assert describe(excerpt(*chord))["polyphony"] == 3.0
    # Chord for one beat, silence, one note for one beat: silent ticks do not count, (3 + 1) / 2.
    assert describe(excerpt(*chord, (72, 2 * BEAT, 3 * BEAT)))["polyphony"] == 2.0
    # Two overlapping notes of one pitch sound as one in a binary pianoroll.
    assert describe(excerpt((60, 0.0, 1.0), (60, 0.5, 1.5)))["polyphony"] == 1.0


def test_empty_beats():
    # Beats 0 and 3 sound, 1 and 2 do not; the last end (tick 84) makes n = 84 // 24 + 1 = 4 beats.
    notes = excerpt((60, 0.0, 0.25), (62, 1.5, 1.75))
    assert describe(notes)["empty_beat_rate"] == 0.5
    # The beat grid starts at the first onset unless an origin is given: two more empty beats before
    # it.
    assert describe(notes, origin=-1.0)["empty_beat_rate"] == pytest.approx(4 / 6)


def test_groove_consistency():
    bar = 4 * STEPS
    identical = onsets_at([0, 4, 10, bar, bar + 4, bar + 10])
    assert describe(identical)["groove_consistency"] == 1.0
    # Onsets {0, 4, 8, 12} then {0, 8}: Hamming distance 2 of 16 positions.
    assert describe(onsets_at([0, 4, 8, 12, bar, bar + 8]))["groove_consistency"] == pytest.approx(
        1 - 2 / 16
    )
    # Three bars {0, 4}, {0, 4}, {0}: distances 0 and 1 over 2 × 16 positions.
    assert describe(onsets_at([0, 4, bar, bar + 4, 2 * bar]))[
        "groove_consistency"
    ] == pytest.approx(1 - 1 / 32)
    assert math.isnan(describe(onsets_at([0, 4, 8]))["groove_consistency"])  # one bar: undefined


def test_repeated_pitches_and_ngrams():
    assert describe(melody([60, 60, 62, 62, 62, 64]))["repeated_pitch_rate"] == pytest.approx(3 / 5)
    # Ordered by (start, pitch): 60, 64 | 64, so one repeat in two pairs.
    assert describe(excerpt((64, 0, 1), (60, 0, 1), (64, 1, 2)))["repeated_pitch_rate"] == 0.5
    # Windows (60 62 64 65) ×2, (62 64 65 60), (64 65 60 62), (65 60 62 64): 2 of 5 recur.
    assert describe(melody([60, 62, 64, 65] * 2))["ngram_repetition"] == pytest.approx(2 / 5)
    assert describe(melody([60] * 6))["ngram_repetition"] == 1.0
    assert math.isnan(describe(melody([60, 62, 64]))["ngram_repetition"])


def test_duration_weighted_histogram_and_chord_transitions():
    d = describe(excerpt((60, 0, 1), (67, 1, 4)))
    assert d["pitch_class_histogram"][0] == 0.25 and d["pitch_class_histogram"][7] == 0.75
    # Onset 0 sounds C and E, onset 1 sounds G: C→G and E→G, half each.
    transition = describe(excerpt((60, 0, 1), (64, 0, 1), (67, 1, 2)))["pitch_class_transition"]
    assert transition[0, 7] == transition[4, 7] == 0.5 and transition.sum() == 1


def test_ioi_histogram_bins():
    # Edges 0.01 · 400^(k/12) s: 0.5 s lies in bin 7 (log(50) / log(400^(1/12)) = 7.8).
    assert np.argmax(describe(melody([60] * 5))["ioi_histogram"]) == 7
    clipped = describe(excerpt((60, 0, 0.1), (62, 0.001, 0.1), (64, 10.001, 11)))["ioi_histogram"]
    assert clipped[0] == clipped[-1] == 0.5  # 1 ms and 10 s fall into the end bins


def test_drums_count_for_onsets_not_pitches():
    d = describe(excerpt((60, 0, 0.5), (36, 0.5, 0.6), (64, 1.0, 1.5), drums=[False, True, False]))
    assert d["used_pitches"] == 2 and d["pitch_range"] == 4
    assert d["mean_ioi"] == 0.5 and d["note_density"] == 2.0


def test_empty_and_single_note_excerpts_are_nan_not_errors():
    for notes in (excerpt(), pd.DataFrame()):
        d = describe(notes)
        assert d["pitch_range"] == d["used_pitches"] == 0
        for name in set(music.FEATURES) - {"pitch_range", "used_pitches", "used_pitch_classes"}:
            assert np.isnan(d[name]).all(), name
    single = describe(excerpt((60, 0.0, 0.5)))
    assert (
        single["polyphony"] == 1.0
        and single["pitch_class_entropy"] == 0.0
        and single["note_density"] == 2.0
    )
    assert math.isnan(single["mean_ioi"]) and math.isnan(single["repeated_pitch_rate"])
    assert (
        np.isnan(single["pitch_class_transition"]).all() and np.isnan(single["ioi_histogram"]).all()
    )


def test_bad_grid_is_refused():
    with pytest.raises(ValueError, match="beat_s"):
        music.describe(melody(C_MAJOR), 0.0, STEPS)


# --- set-level comparison ---


def random_excerpts(rng, count, used, pitch_low=21, notes=120):
    """Excerpts of `notes` notes spread over about `used` distinct pitches (± 5) from pitch_low
    up."""
    out = []
    for _ in range(count):
        pitches = rng.choice(
            np.arange(pitch_low, pitch_low + rng.integers(used - 5, used + 6)), notes
        )
        starts = np.cumsum(rng.exponential(0.15, notes))
        out.append(
            pd.DataFrame(
                {
                    "pitch": pitches,
                    "start": starts,
                    "end": starts + rng.exponential(0.3, notes),
                    "velocity": 64,
                }
            )
        )
    return out


def compare(generated, reference):
    return music.compare(generated, reference, BEAT, STEPS)


def as_json(result) -> str:
    return json.dumps(result, allow_nan=False, sort_keys=True)


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    return {
        "ref": random_excerpts(rng, 80, 80),
        "same": random_excerpts(rng, 60, 80),
        "near": random_excerpts(rng, 60, 74),
        "far": random_excerpts(rng, 60, 60),
        "narrow": random_excerpts(rng, 60, 30),
    }


def test_a_set_against_itself_overlaps(sets):
    result = compare(sets["ref"], sets["ref"])
    assert result["count"] == result["reference_count"] == 80
    assert result["oa_mean"] > 0.9 and result["kld_mean"] < 0.02
    used = result["features"]["used_pitches"]
    assert used["value"] == used["data"]
    assert (
        result["features"]["mean_ioi"]["w1"] == 0.0
        and result["features"]["mean_ioi"]["std_ratio"] == 1.0
    )


def test_disjoint_sets_do_not_overlap(sets):
    used = compare(sets["narrow"], sets["ref"])["features"]["used_pitches"]
    assert used["value"] < 35 and used["data"] > 55
    assert used["oa"] < 0.01 and used["kld"] > 5


def test_nearer_set_overlaps_more(sets):
    oa = {
        name: compare(sets[name], sets["ref"])["features"]["used_pitches"]["oa"]
        for name in ("same", "near", "far")
    }
    assert oa["same"] > oa["near"] > oa["far"]


def test_kld_uses_one_grid():
    # mgeval evaluated each PDF on its own [min, max] grid, so a shifted copy scored KLD 0.
    x = np.random.default_rng(1).normal(size=2000)
    oa, kld = music._overlap(x, x + 5)
    assert oa < 0.05 and kld > 5
    oa, kld = music._overlap(x, x.copy())
    assert oa > 0.99 and kld == pytest.approx(
        0, abs=1e-12
    )  # OA < 1: the KDE tails past [min, max] are cut


def test_binned_kde_matches_gaussian_kde():
    rng = np.random.default_rng(2)
    for values in (
        rng.normal(size=3000),
        rng.exponential(size=500),
        rng.integers(0, 5, 3000).astype(float),
    ):
        grid = np.linspace(values.min(), values.max(), music.GRID_POINTS)
        exact = stats.gaussian_kde(values)(grid)
        np.testing.assert_allclose(music._kde(values, grid), exact, atol=1e-3 * exact.max())


def test_constant_distances_fall_back_to_histograms():
    assert music._overlap(np.zeros(10), np.zeros(20)) == (1.0, 0.0)
    # Half of the inter distances sit on the intra set's single value: OA 1/2, KLD log 2.
    oa, kld = music._overlap(np.zeros(10), np.r_[np.zeros(10), np.linspace(1, 2, 10)])
    assert oa == pytest.approx(0.5) and kld == pytest.approx(math.log(2))
    assert all(
        math.isnan(value) for value in music._overlap(np.zeros(1), np.arange(5.0))
    )  # too few to judge


def test_timing_collapse():
    rng = np.random.default_rng(3)
    reference = random_excerpts(rng, 20, 60)
    collapsed = [melody(rng.integers(40, 90, 50), step=0.2, length=0.2) for _ in range(20)]
    result = compare(collapsed, reference)["features"]
    assert result["mean_ioi"]["std_ratio"] == pytest.approx(0, abs=1e-9)
    assert result["mean_duration"]["std_ratio"] == pytest.approx(0, abs=1e-9)
    assert result["mean_ioi"]["w1"] > 0.05


def test_degenerate_sets_are_json_safe():
    identical = [melody(C_MAJOR)] * 5
    same = compare(identical, identical)
    assert (
        same["features"]["used_pitches"]["oa"] == 1.0
        and same["features"]["used_pitches"]["kld"] == 0.0
    )
    cases = [
        (identical, identical),
        ([melody(C_MAJOR)], [melody(C_MAJOR)]),
        ([], identical),
        (identical, []),
        ([excerpt(), excerpt()], identical),
        ([excerpt((60, 0, 1))] * 3, [excerpt(), excerpt((62, 0, 0))]),
    ]
    for generated, reference in cases:
        result = compare(generated, reference)
        as_json(result)
        assert result["count"] == len(generated)
    lonely = compare([melody(C_MAJOR)], [melody(C_MAJOR)])
    assert lonely["oa_mean"] is None and lonely["features"]["used_pitches"]["value"] == 7


def test_results_are_plain_python_and_deterministic(sets):
    first = compare(sets["near"], sets["ref"])  # 80 · 79 intra pairs: the subsampled path
    assert as_json(first) == as_json(compare(sets["near"], sets["ref"]))
    for entry in first["features"].values():
        assert all(value is None or type(value) is float for key, value in entry.items())
    assert type(first["oa_mean"]) is float and type(first["count"]) is int


def test_judge_compares_groups_and_the_train_ceiling(sets):
    result = music.judge(
        {"near": sets["near"], "far": sets["far"]}, sets["ref"], sets["same"], BEAT, STEPS
    )
    assert set(result) == {"groups", "ceiling"} and set(result["groups"]) == {"near", "far"}
    assert as_json(result["groups"]["near"]) == as_json(compare(sets["near"], sets["ref"]))
    assert result["ceiling"]["oa_mean"] > result["groups"]["far"]["oa_mean"]
    as_json(result)


def test_excerpts_carry_their_own_beat():
    notes = excerpt((60, 0.0, 0.25), (62, 1.5, 1.75))
    slow = notes.copy()
    slow.attrs["beat_s"] = 1.0  # ticks 0–6 and 36–42: beats 0 and 1 of 2, none empty
    assert compare([slow], [notes])["features"]["empty_beat_rate"]["value"] == 0.0
    assert compare([notes], [notes])["features"]["empty_beat_rate"]["value"] == 0.5
