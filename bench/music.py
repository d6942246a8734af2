"""music.json speed and agreement: etude's OA/KLD against mgeval's procedure on the same distances.

Ours: music.judge as the generate stage runs it (temperature groups of `generate.num_samples`
excerpts of `num_notes` notes against `reference_excerpts` test and training excerpts), each
distance list smoothed by a binned Gaussian KDE on one common grid. Reference: mgeval's way
(metrics.md §2): scipy's exact gaussian_kde per list, OA as integrate.quad of min(p, q) over the
union's range, KLD on one common grid (mgeval's two-grid KLD is a bug, not a cost). The reference
runs on the same distance lists, so the figures differ only by the density estimate and the
integration. Target: ours >= 10x faster, OA within 0.01 of the reference.

    python -m bench.music
"""

import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate, stats

from bench import machine_note, print_table
from etude import music, variants
from etude.batches import evenly_spaced
from etude.pipeline import NOTE_SEQUENCES
from etude.sequences import NoteSequences

TARGET_RATIO, OA_TOLERANCE = 10.0, 0.01


def excerpts(data: NoteSequences, split: str, count: int, length: int, shuffle: int | None = None):
    """`count` runs of `length` notes; `shuffle`: their pitches permuted with this seed (stand-in
    samples)."""
    features, rng = data.features(), np.random.default_rng(shuffle)
    out = []
    for start in evenly_spaced(data.window_starts(split, length), count):
        pitch, step, duration = features[start : start + length].T.astype(np.float64)
        if shuffle is not None:
            pitch = rng.permutation(pitch)
        onset = np.cumsum(step) - step[0]
        out.append(
            pd.DataFrame(
                {
                    "pitch": pitch.astype(int),
                    "start": onset,
                    "end": onset + duration,
                    "velocity": 100,
                }
            )
        )
    return out


def mgeval_overlap(intra: np.ndarray, inter: np.ndarray) -> float:
    p, q = stats.gaussian_kde(intra), stats.gaussian_kde(inter)
    lo, hi = min(intra.min(), inter.min()), max(intra.max(), inter.max())
    return integrate.quad(lambda x: min(p(x)[0], q(x)[0]), lo, hi, limit=100)[0]


def main():
    machine_note()
    params = variants.load()
    settings = params.generate
    data = NoteSequences.load(Path(NOTE_SEQUENCES))
    test = excerpts(data, "test", settings.reference_excerpts, settings.num_notes)
    train = excerpts(data, "train", settings.reference_excerpts, settings.num_notes)
    # One stand-in group (test excerpts with shuffled pitches) and the ceiling: the reference takes
    # minutes.
    groups = {
        "shuffled": excerpts(data, "test", settings.num_samples, settings.num_notes, shuffle=0)
    }
    beat = 60.0 / settings.clock_bpm

    t0 = time.perf_counter()
    ours = music.judge(groups, test, train, beat, settings.clock_steps_per_beat)
    ours_s = time.perf_counter() - t0

    # The reference on the very distance lists ours compared.
    reference = music._Reference(
        music._describe_set(test, beat, settings.clock_steps_per_beat, None)
    )
    t0 = time.perf_counter()
    gaps = []
    for name, excerpt_set in (*groups.items(), ("ceiling", train)):
        described = music._describe_set(excerpt_set, beat, settings.clock_steps_per_beat, None)
        result = ours["ceiling"] if name == "ceiling" else ours["groups"][name]
        for feature in music.FEATURES:
            ref = music._finite_rows(reference.described.features[feature])
            inter = music._distances(ref, music._finite_rows(described.features[feature]))
            intra = reference.intra(feature)
            if (
                result["features"][feature]["oa"] is None
                or music._constant(intra)
                or music._constant(inter)
            ):
                continue
            gaps.append(abs(mgeval_overlap(intra, inter) - result["features"][feature]["oa"]))
    reference_s = time.perf_counter() - t0

    print(
        f"\n{len(groups)} group of {settings.num_samples} and the ceiling, "
        f"against {len(test)} test excerpts of "
        f"{settings.num_notes} notes; {len(music.FEATURES)} descriptors\n"
    )
    print_table(
        ["", "seconds", "OA max |diff|"],
        [
            ["etude music.judge (binned KDE, one grid)", f"{ours_s:.2f}", "-"],
            ["mgeval procedure (gaussian_kde + quad)", f"{reference_s:.2f}", f"{max(gaps):.2g}"],
        ],
    )
    ratio, gap = reference_s / ours_s, max(gaps)
    print(
        f"\nspeed-up {ratio:.0f}x (target >= {TARGET_RATIO:g}x): "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}; "
        f"OA agreement {gap:.2g} (target <= {OA_TOLERANCE}): "
        f"{'met' if gap <= OA_TOLERANCE else 'MISSED'}"
    )
    # The stand-ins are test excerpts themselves (timing and pitch sets kept): they score above the
    # ceiling.
    print(
        f"OA mean: ceiling (train vs test) {ours['ceiling']['oa_mean']:.3f}, "
        f"shuffled test pitches {ours['groups']['shuffled']['oa_mean']:.3f}"
    )


if __name__ == "__main__":
    main()
