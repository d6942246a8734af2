"""What a next-note model's test predictions and samples are worth, beside what trivial predictors
and real music score under the same measures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from etude.batches import evenly_spaced
from etude.params import Generate
from etude.sequences import NoteSequences


def pitch_class_diversity(pitches: np.ndarray) -> float:
    """Mean pairwise L1 distance between rows' pitch-class histograms: 0 when every row uses the
    same pitch classes equally often."""
    histograms = np.stack([np.bincount(row % 12, minlength=12) / len(row) for row in pitches])
    distance = np.abs(histograms[:, None] - histograms[None]).sum(-1)
    return float(distance.sum() / (len(pitches) * (len(pitches) - 1)))


def model_metrics(test: dict[str, np.ndarray]) -> dict[str, float]:
    """MAE of the predicted median and RMSE of the predicted mean (one value for an MSE head),
    negative outputs clipped to 0 as the sampler clips them."""
    clipped = {
        k: np.maximum(test[k], 0)
        for k in ("step_median", "step_mean", "duration_median", "duration_mean")
    }
    mean_ce = float(test["ce"].mean())
    return {
        "pitch_top1": float(test["top1"].mean()),
        "pitch_top5": float(test["top5"].mean()),
        "pitch_cross_entropy": mean_ce,
        "pitch_perplexity": math.exp(mean_ce),
        "step_mae": float(np.abs(clipped["step_median"] - test["step"]).mean()),
        "step_rmse": float(np.sqrt(((clipped["step_mean"] - test["step"]) ** 2).mean())),
        "duration_mae": float(np.abs(clipped["duration_median"] - test["duration"]).mean()),
        "duration_rmse": float(
            np.sqrt(((clipped["duration_mean"] - test["duration"]) ** 2).mean())
        ),
        "negative_output_share": float(
            ((test["step_mean"] < 0) | (test["duration_mean"] < 0)).mean()
        ),
    }


def baseline_metrics(
    test: dict[str, np.ndarray], data: NoteSequences, vocab_size: int
) -> dict[str, float]:
    """The best constant predictor of each metric, under the same name: unigram pitch frequencies,
    the training median for MAE and the training mean for RMSE (an MSE-trained head competes with
    the mean)."""
    counts = data.train_pitch_counts[:vocab_size].astype(np.float64) + 1.0  # add-one smoothing
    unigram = counts / counts.sum()
    order = np.argsort(-counts, kind="stable")
    pitch = test["pitch"].astype(np.int64)
    unigram_ce = float(-np.log(unigram[pitch]).mean())
    stats = data.stats
    return {
        "pitch_top1": float(np.isin(pitch, order[:1]).mean()),
        "pitch_top5": float(np.isin(pitch, order[:5]).mean()),
        "pitch_cross_entropy": unigram_ce,
        "pitch_perplexity": math.exp(unigram_ce),
        "step_mae": float(np.abs(stats["step_median"] - test["step"]).mean()),
        "step_rmse": float(np.sqrt(((stats["step_mean"] - test["step"]) ** 2).mean())),
        "duration_mae": float(np.abs(stats["duration_median"] - test["duration"]).mean()),
        "duration_rmse": float(np.sqrt(((stats["duration_mean"] - test["duration"]) ** 2).mean())),
    }


def temperature_group(temperature: float) -> str:
    """The sample group of a temperature: t1, t0.8, t1.5."""
    return f"t{temperature:g}"


def sample_table(notes: np.ndarray, settings: Generate, per_temperature: int) -> pd.DataFrame:
    """One row per generated note: group (t<temperature>), sample index, pitch, timing in
    seconds."""
    frames = []
    rows = ((t, i) for t in settings.temperatures for i in range(per_temperature))
    for row, (temperature, index) in enumerate(rows):
        step, duration = notes[row, :, 1], notes[row, :, 2]
        start = np.cumsum(step)
        frames.append(
            pd.DataFrame(
                {
                    "group": temperature_group(temperature),
                    "temperature": temperature,
                    "sample": index,
                    "pitch": notes[row, :, 0].astype(int),
                    "step": step,
                    "duration": duration,
                    "start": start,
                    "end": start + duration,
                    "velocity": settings.velocity,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def excerpts(data: NoteSequences, split: str, settings: Generate, count: int) -> list[pd.DataFrame]:
    """`count` runs of `num_notes` consecutive notes of a split, evenly spaced, each from t = 0."""
    features = data.features()
    found = []
    for start in evenly_spaced(data.window_starts(split, settings.num_notes), count):
        pitch, step, duration = features[start : start + settings.num_notes].T.astype(np.float64)
        onset = np.cumsum(step) - step[0]
        found.append(
            pd.DataFrame(
                {
                    "pitch": pitch.astype(int),
                    "start": onset,
                    "end": onset + duration,
                    "velocity": settings.velocity,
                }
            )
        )
    return found


def sample_stats(
    table: pd.DataFrame, data: NoteSequences, settings: Generate, seed: int
) -> dict[str, float]:
    """Per temperature: diversity and timing spread of samples, next to test windows of equal
    length.

    A std ratio far below 1 or a repeated-pitch rate far above the test data's is the tutorial's
    known failure: generation collapsing onto one note or one rhythm. The test data's own band of
    the std ratio says how far from 1 real music lands under the same statistic.
    """
    num_notes = settings.num_notes
    test = data.split_mask("test")
    windows = [
        data.pitch[s : s + num_notes]
        for s in evenly_spaced(data.window_starts("test", num_notes), settings.statistics_windows)
    ]
    stats = {
        "test_unique_pitches": float(np.mean([len(np.unique(w)) for w in windows])),
        "test_repeated_pitch_rate": float(np.mean([(np.diff(w) == 0).mean() for w in windows])),
    } | excerpt_spread_band(data, settings, seed)
    for temperature, group in table.groupby("temperature"):
        by_sample = group.groupby("sample")["pitch"]
        key = temperature_group(temperature)
        stats[f"{key}_unique_pitches"] = float(by_sample.nunique().mean())
        stats[f"{key}_repeated_pitch_rate"] = float(
            by_sample.apply(lambda p: (p.diff() == 0).mean()).mean()
        )
        stats[f"{key}_step_std_ratio"] = float(group["step"].std() / data.step[test].std())
        stats[f"{key}_duration_std_ratio"] = float(
            group["duration"].std() / data.duration[test].std()
        )
    return stats


def excerpt_spread_band(data: NoteSequences, settings: Generate, seed: int) -> dict[str, float]:
    """The step and duration std ratios of real music: `num_samples` random test excerpts of
    `num_notes` notes against the whole test split, drawn `spread_band.draws` times; the band's
    ends are percentiles of those ratios. A few long notes carry most of a duration's σ, so a
    sample of real excerpts lands well away from 1 too."""
    band = settings.spread_band
    test = data.split_mask("test")
    starts = data.window_starts("test", settings.num_notes)
    if len(starts) == 0:  # no test piece holds num_notes notes: no excerpt to compare with
        return {}
    chosen = np.random.default_rng(seed).choice(starts, (band.draws, settings.num_samples))
    windows = chosen[..., None] + np.arange(settings.num_notes)
    stats = {}
    for name, values in (("step", data.step), ("duration", data.duration)):
        ratios = values[windows].reshape(band.draws, -1).std(axis=1) / values[test].std()
        low, high = np.percentile(ratios, [band.percentile, 100 - band.percentile])
        stats[f"test_{name}_std_ratio_low"], stats[f"test_{name}_std_ratio_high"] = (
            float(low),
            float(high),
        )
    return stats
