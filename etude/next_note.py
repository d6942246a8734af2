"""The next-note task over (pitch, step, duration), as in the TensorFlow music-generation tutorial.

Everything a next-note network shares: training windows and their transposition, the loss (pitch
cross-entropy plus the timing heads' losses), the timing heads themselves (the documents' MSE with
positive pressure, or categoricals over log-spaced bins that sampling draws from), test metrics
beside the baselines a useful model must beat, samples seeded from test windows with their
statistics, and MIDI output. A network family subclasses `NextNoteFamily` and brings only its model
(called as `model(notes, state) -> (pitch logits, step, duration, state)` on raw notes, with its
timing heads as `model.timing`, a `TimingHeads`) and its sampler.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat, model_validator
from torch import nn

from etude.diagnosis import Verdict, collapse_verdict, recent, scaled, variant_key
from etude.family import Family, Results, Section
from etude.midi import write_notes
from etude.music import ngram_repetition
from etude.params import Evaluate, Generate, Strict
from etude.sequences import NoteSequences
from etude.training import evaluation_batches, evenly_spaced

NoteBatch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T, 3) raw notes, targets (B, 3)


class LossWeights(Strict):
    pitch: NonNegativeFloat
    step: NonNegativeFloat
    duration: NonNegativeFloat


class TimingBins(Strict):
    """Log-spaced bins of seconds: [0, min_s), then `count - 1` bins up to max_s; longer values fall in the last."""

    count: Annotated[int, Field(ge=2)]
    min_s: PositiveFloat
    max_s: PositiveFloat
    soft_label_width: NonNegativeFloat  # σ, in bins, of the Gaussian training target around the true bin; 0: one-hot

    @model_validator(mode="after")
    def _ordered(self):
        if self.max_s <= self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be above min_s ({self.min_s})")
        return self


class NextNoteConfig(Strict):
    """The task's settings, shared by every next-note network."""

    seq_len: Annotated[int, Field(ge=2)]
    vocab_size: Annotated[int, Field(ge=1, le=128)]
    loss_weights: LossWeights
    timing_head: Literal["mse", "bins"]       # mse: the documents' regression; bins: a sampled categorical
    timing_bins: TimingBins                   # bins heads (and a network's binned timing inputs)
    positive_pressure: NonNegativeFloat       # mse heads: MSE + pressure * max(-y_hat, 0)
    transpose_semitones: Annotated[int, Field(ge=0, le=24)]  # random transposition within +-N
    diagnostic_notes: Annotated[int, Field(ge=8)]  # length of the samples drawn after each epoch


def windows_at(features: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    """(B, seq_len + 1, 3): each window's inputs and, last, its target note."""
    return features[starts[:, None] + np.arange(seq_len + 1)]


def transpose(windows: np.ndarray, semitones: int, vocab: int, rng: np.random.Generator) -> None:
    """Shift each window by a random interval that keeps all of its pitches inside the vocabulary."""
    pitch = windows[:, :, 0]
    shift = rng.integers(-semitones, semitones + 1, size=len(windows))
    shift = np.clip(shift, -pitch.min(axis=1), vocab - 1 - pitch.max(axis=1))
    windows[:, :, 0] += shift[:, None]


def to_batch(windows: np.ndarray, device: torch.device) -> NoteBatch:
    tensor = torch.from_numpy(windows).to(device)
    return tensor[:, :-1], tensor[:, -1]


def positive_pressure_mse(pred: torch.Tensor, target: torch.Tensor, pressure: float) -> torch.Tensor:
    """MSE plus a penalty on negative outputs: steps and durations cannot be negative."""
    return ((target - pred) ** 2 + pressure * torch.clamp(-pred, min=0)).mean()


def draw_class(logits: torch.Tensor, temperatures: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One class per row by inverse-CDF sampling: one uniform number per row. torch.multinomial
    draws one per class, which made it 60 % of a sampling step at batch 256."""
    cdf = torch.softmax(logits / temperatures[:, None], dim=-1).cumsum(dim=-1)
    u = torch.rand(len(cdf), 1, generator=generator, device=cdf.device)
    return (cdf < u).sum(dim=-1).clamp(max=cdf.shape[-1] - 1)


def draw_note(timing: TimingHeads, heads: tuple, temperatures: torch.Tensor, generator: torch.Generator,
              dtype: torch.dtype) -> torch.Tensor:
    """(B, 3): a pitch, step and duration drawn from each row's heads (pitch logits, then the timing
    heads' outputs), at each row's temperature."""
    logits, step, duration = heads
    pitch = draw_class(logits, temperatures, generator)
    step, duration = (timing.draw(x, temperatures, generator) for x in (step, duration))
    return torch.stack([pitch.to(dtype), step, duration], dim=1)


def timing_edges(bins: TimingBins) -> torch.Tensor:
    """(count + 1,) bin edges in seconds: 0, then log-spaced from min_s to max_s."""
    return torch.cat([torch.zeros(1), torch.logspace(math.log10(bins.min_s), math.log10(bins.max_s), bins.count)])


def soft_labels(count: int, width: float) -> torch.Tensor:
    """(count, count): row i is the training target for bin i, a Gaussian over bin indices centred on i
    (the identity for width 0). Bins are ordered: a neighbouring bin is a near miss, not a wrong class,
    and one-hot targets teach the heads a confidence that held-out timing does not bear out."""
    if width == 0:
        return torch.eye(count)
    index = torch.arange(count, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((index[:, None] - index[None, :]) / width) ** 2)
    return (kernel / kernel.sum(1, keepdim=True)).float()


def timing_bin(seconds: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """The bin of each value; values past the last edge fall in the last bin."""
    return torch.bucketize(seconds.contiguous(), edges[1:-1], right=True)


class TimingHeads(nn.Module):
    """Step and duration from a network's last hidden layer: the documents' regression (one value
    each, trained with MSE and positive pressure: it learns the conditional mean, so sampled timing
    collapses towards it) or a categorical over log-spaced bins, drawn from at generation time (a
    value uniform within the drawn bin), which keeps the data's spread."""

    def __init__(self, config: NextNoteConfig, width: int):
        super().__init__()
        self.kind, self.pressure = config.timing_head, config.positive_pressure
        outputs = 1 if self.kind == "mse" else config.timing_bins.count
        self.step, self.duration = nn.Linear(width, outputs), nn.Linear(width, outputs)
        self.register_buffer("edges", timing_edges(config.timing_bins), persistent=False)
        self.register_buffer("targets", soft_labels(config.timing_bins.count, config.timing_bins.soft_label_width),
                             persistent=False)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(…,) seconds for mse heads, (…, bins) logits for bins heads."""
        step, duration = self.step(hidden), self.duration(hidden)
        return (step.squeeze(-1), duration.squeeze(-1)) if self.kind == "mse" else (step, duration)

    def loss(self, output: torch.Tensor, seconds: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            return positive_pressure_mse(output, seconds, self.pressure)
        return F.cross_entropy(output, self.targets[timing_bin(seconds, self.edges)])

    def draw(self, output: torch.Tensor, temperatures: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) seconds: the regression's value, or a bin drawn at each row's temperature and a
        uniform point within it."""
        if self.kind == "mse":
            return output.clamp(min=0)
        index = draw_class(output, temperatures, generator)
        low, high = self.edges[index], self.edges[index + 1]
        return low + (high - low) * torch.rand(len(index), generator=generator, device=output.device)

    def point(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(median, mean) of each prediction in seconds: the best answers under MAE and under RMSE."""
        if self.kind == "mse":
            return output, output
        probs = torch.softmax(output.double(), dim=-1)
        edges = self.edges.double()
        mean = (probs * (edges[:-1] + edges[1:]) / 2).sum(-1)
        cdf = probs.cumsum(-1)
        index = (cdf < 0.5).sum(-1).clamp(max=probs.shape[-1] - 1)
        below = (cdf.gather(-1, index[..., None]) - probs.gather(-1, index[..., None]))[..., 0]
        within = ((0.5 - below) / probs.gather(-1, index[..., None])[..., 0]).clamp(0, 1)
        median = edges[index] + within * (edges[index + 1] - edges[index])
        return median, mean


def note_loss(model, logits: torch.Tensor, step: torch.Tensor, duration: torch.Tensor, target: torch.Tensor,
              weights: LossWeights) -> tuple[torch.Tensor, dict]:
    """The weighted sum of pitch cross-entropy and the timing heads' losses, and each term, for
    predictions of (N, 3) target notes."""
    terms = {
        "pitch": F.cross_entropy(logits, target[:, 0].long()),
        "step": model.timing.loss(step, target[:, 1]),
        "duration": model.timing.loss(duration, target[:, 2]),
    }
    return weights.pitch * terms["pitch"] + weights.step * terms["step"] + weights.duration * terms["duration"], terms


class NextNoteFamily(Family):
    """The task's hooks; a subclass adds `Config`, `build` and `sample`."""

    baselines = ("unigram pitch frequencies, the training median (MAE) and mean (RMSE) of step and duration, "
                 "and repeating the last pitch")

    @abstractmethod
    def sample(self, model, seeds: torch.Tensor, temperatures: torch.Tensor, num_notes: int,
               generator: torch.Generator) -> torch.Tensor:
        """(B, num_notes, 3) raw notes continuing each seed window at its row's temperature."""

    def representation(self, config) -> str:
        return "notes"

    def load_data(self, config, path: Path) -> NoteSequences:
        return NoteSequences.load(path)

    def split_size(self, config, data: NoteSequences, split: str) -> int:
        return len(data.window_starts(split, config.seq_len + 1))

    def example(self, config) -> tuple[str, str]:
        what = f"window of {config.seq_len + 1} notes (seq_len {config.seq_len} and the next note)"
        return what, "variants.{variant}.seq_len"

    def model_meta(self, config, data: NoteSequences) -> dict:
        return {"stats": data.stats}

    def train_batches(self, data: NoteSequences, config, epoch: int, device: torch.device) -> Iterator[NoteBatch]:
        rng = np.random.default_rng([config.seed, epoch])
        starts = rng.permutation(data.window_starts("train", config.seq_len + 1))[: config.samples_per_epoch]
        features = data.features()
        for i in range(0, len(starts) - config.batch_size + 1, config.batch_size):
            windows = windows_at(features, starts[i : i + config.batch_size], config.seq_len)
            if config.transpose_semitones:
                transpose(windows, config.transpose_semitones, config.vocab_size, rng)
            yield to_batch(windows, device)

    def eval_batches(self, data: NoteSequences, config, split: str, limit: int | None, device: torch.device,
                     batch_size: int = 1024) -> Iterator[NoteBatch]:
        features = data.features()
        what, _ = self.example(config)
        for starts in evaluation_batches(data.window_starts(split, config.seq_len + 1), limit, batch_size,
                                         split, what):
            yield to_batch(windows_at(features, starts, config.seq_len), device)

    def loss(self, model, batch: NoteBatch, config, epoch: int | None) -> tuple[torch.Tensor, dict]:
        """The next note after each window."""
        inputs, target = batch
        logits, step, duration, _ = model(inputs)
        return note_loss(model, logits, step, duration, target, config.loss_weights)

    @torch.no_grad()
    def diagnostics(self, model, data: NoteSequences, config, epoch: int, device: torch.device) -> dict[str, float]:
        """Per epoch, `diagnostic_samples` continuations of validation windows (temperature 1, seeded by
        epoch) against the notes that really followed: the spread of sampled steps and durations (MSE
        heads collapse to the mean: the tutorial's timing collapse), 4-gram and repeated-pitch rates,
        and how much samples differ from each other."""
        model.eval()
        length = config.diagnostic_notes
        starts = evenly_spaced(data.window_starts("validation", config.seq_len + length), config.diagnostic_samples)
        features = data.features()
        seeds = torch.from_numpy(features[starts[:, None] + np.arange(config.seq_len)]).to(device)
        generator = torch.Generator(device=device).manual_seed(config.seed + epoch)
        notes = self.sample(model, seeds, torch.ones(len(seeds), device=device), length, generator).cpu().numpy()
        real = features[starts[:, None] + config.seq_len + np.arange(length)]
        spread = notes[:, :, 1:].reshape(-1, 2).std(0) / np.maximum(real[:, :, 1:].reshape(-1, 2).std(0), 1e-12)
        sampled, followed = notes[:, :, 0].astype(np.int64), real[:, :, 0].astype(np.int64)
        data_diversity = pitch_class_diversity(followed)
        return {"sample_step_std_ratio": float(spread[0]), "sample_duration_std_ratio": float(spread[1]),
                "sample_ngram_repetition": float(np.mean([ngram_repetition(row) for row in sampled])),
                "data_ngram_repetition": float(np.mean([ngram_repetition(row) for row in followed])),
                "sample_repeated_pitch_rate": float((np.diff(sampled, axis=1) == 0).mean()),
                "data_repeated_pitch_rate": float((np.diff(followed, axis=1) == 0).mean()),
                "sample_diversity_ratio": pitch_class_diversity(sampled) / data_diversity if data_diversity else 0.0}

    def diagnose(self, variant: str, history: pd.DataFrame, config, settings) -> list[Verdict]:
        """Step and duration collapse (the tutorial's MSE heads), repetitive samples, samples alike."""
        h = history.dropna(subset=["val_loss"])
        if not len(h):
            return []
        remedies = settings.remedies
        more_context = {variant_key(variant, "seq_len"): round(remedies.context_factor * config.seq_len)}
        if config.timing_head == "mse":
            remedy = ("distributional timing heads: an MSE head predicts the conditional mean, and more context "
                      "(the documents' version 2 doubled seq_len) only narrows the gap")
            timing_fix = {variant_key(variant, "timing_head"): "bins"}
        else:
            remedy = "more context (the documents' version 2 doubled seq_len)"
            timing_fix = more_context
        verdicts = []
        for head in ("step", "duration"):
            verdicts += collapse_verdict(
                f"{head}_collapse", variant, h, f"sample_{head}_std_ratio", settings.collapse_std_ratio, settings,
                f"the spread of sampled {head}s is", remedy, timing_fix)
        sampled, data = (recent(h, f"{kind}_ngram_repetition", settings) for kind in ("sample", "data"))
        if sampled > 0 and sampled > settings.repetition_factor * data:
            verdicts.append(Verdict(
                "repetitive_generation", f"{sampled:.0%} of sampled pitch 4-grams recur within a sample against "
                f"{data:.0%} in the data (repeated pitches {recent(h, 'sample_repeated_pitch_rate', settings):.0%} vs "
                f"{recent(h, 'data_repeated_pitch_rate', settings):.0%}; medians of the last epochs)",
                "a longer context or a higher sampling temperature (the documents)", more_context,
                int(h["epoch"].iloc[-1]) + 1))
        verdicts += collapse_verdict(
            "mode_collapse", variant, h, "sample_diversity_ratio", settings.diversity_ratio, settings,
            "samples differ from each other (pitch-class histograms)", "a lower learning rate and more epochs",
            {variant_key(variant, "lr"): scaled(config.lr, remedies.mode_collapse_lr)})
        return verdicts

    def regularize(self, variant: str, config, remedies) -> dict[str, Any]:
        """Overfitting: more data by transposition augmentation, and more dropout."""
        overrides = super().regularize(variant, config, remedies)
        if config.transpose_semitones == 0:
            overrides[variant_key(variant, "transpose_semitones")] = remedies.transpose_semitones
        return overrides

    @torch.no_grad()
    def evaluate(self, model, data: NoteSequences, config, settings: Evaluate,
                 device: torch.device) -> dict[str, dict[str, float]]:
        """Test-split metrics per head, each beside the baselines that a useful model must beat."""
        model.eval()
        columns: dict[str, list[torch.Tensor]] = {k: [] for k in (
            "ce", "top1", "top5", "repeat_last", "pitch", "step_median", "step_mean", "step",
            "duration_median", "duration_mean", "duration")}
        for inputs, target in self.eval_batches(data, config, "test", settings.max_windows, device):
            logits, step, duration, _ = model(inputs)
            pitch = target[:, 0].long()
            top = logits.topk(5, dim=1).indices
            (step_median, step_mean), (duration_median, duration_mean) = map(model.timing.point, (step, duration))
            for key, value in (("ce", F.cross_entropy(logits, pitch, reduction="none")), ("top1", top[:, 0] == pitch),
                               ("top5", (top == pitch[:, None]).any(dim=1)),
                               ("repeat_last", inputs[:, -1, 0].long() == pitch), ("pitch", pitch),
                               ("step_median", step_median), ("step_mean", step_mean), ("step", target[:, 1]),
                               ("duration_median", duration_median), ("duration_mean", duration_mean),
                               ("duration", target[:, 2])):
                columns[key].append(value)
        test = {k: torch.cat(v).double().cpu().numpy() for k, v in columns.items()}
        return {"model": _model_metrics(test), "baseline": _baseline_metrics(test, data, config.vocab_size),
                "repeat_last": {"pitch_top1": float(test["repeat_last"].mean())},
                "windows": {"count": float(len(test["ce"]))}}

    def generate(self, model, data: NoteSequences, config, settings: Generate, out_dir: Path,
                 device: torch.device) -> tuple[pd.DataFrame, dict[str, float]]:
        """Samples per temperature, seeded from test windows, the first `midi_files` written as MIDI;
        returns every sample's notes and their statistics."""
        seed_starts = evenly_spaced(data.window_starts("test", config.seq_len), settings.num_samples)
        if len(seed_starts) < settings.num_samples:
            raise ValueError(f"the test split has {len(seed_starts)} seed windows of {config.seq_len} notes, "
                             f"generate.num_samples is {settings.num_samples}")
        seeds = torch.from_numpy(data.features()[seed_starts[:, None] + np.arange(config.seq_len)])
        temps = torch.tensor(settings.temperatures, dtype=torch.float32)
        generator = torch.Generator(device=device).manual_seed(config.seed)
        model.eval()
        notes = self.sample(model, seeds.repeat(len(temps), 1, 1).to(device),
                            temps.repeat_interleave(len(seeds)).to(device), settings.num_notes, generator)
        table = _sample_table(notes.cpu().numpy().astype(np.float64), settings, len(seeds))
        out_dir.mkdir(parents=True, exist_ok=True)
        for (group, index), frame in table.groupby(["group", "sample"], sort=False):
            if index < settings.midi_files:
                write_notes(frame, out_dir / f"{group}_s{index}.mid", settings.program)
        # Test excerpts of the same length, to listen to beside the samples.
        for index, excerpt in enumerate(_excerpts(data, "test", settings, settings.midi_files)):
            write_notes(excerpt, out_dir / f"test_s{index}.mid", settings.program)
        return table, sample_stats(table, data, settings, config.seed)

    def music(self, data: NoteSequences, config, settings: Generate, samples: pd.DataFrame) -> dict:
        """Each temperature's samples against test (and, for the ceiling, training) excerpts of
        `num_notes` consecutive notes, on clock beats: performance MIDI has no musical ones."""
        from etude import music

        groups = {group: [notes for _, notes in frame.groupby("sample")]
                  for group, frame in samples.groupby("group", sort=False)}
        test, train = (_excerpts(data, split, settings, settings.reference_excerpts) for split in ("test", "train"))
        return music.judge(groups, test, train, 60.0 / settings.clock_bpm, settings.clock_steps_per_beat)

    def report_sections(self, result: Results, config, settings) -> list[Section]:
        from etude.figures import piano_roll_figure

        return [Section(piano_roll_figure(result, settings.piano_roll_seconds, first_sample_only=True))]


def pitch_class_diversity(pitches: np.ndarray) -> float:
    """Mean pairwise L1 distance between rows' pitch-class histograms: 0 when every row uses the
    same pitch classes equally often."""
    histograms = np.stack([np.bincount(row % 12, minlength=12) / len(row) for row in pitches])
    distance = np.abs(histograms[:, None] - histograms[None]).sum(-1)
    return float(distance.sum() / (len(pitches) * (len(pitches) - 1)))


def _model_metrics(test: dict[str, np.ndarray]) -> dict[str, float]:
    """MAE of the predicted median and RMSE of the predicted mean (one value for an MSE head),
    negative outputs clipped to 0 as the sampler clips them."""
    clipped = {k: np.maximum(test[k], 0) for k in ("step_median", "step_mean", "duration_median", "duration_mean")}
    mean_ce = float(test["ce"].mean())
    return {
        "pitch_top1": float(test["top1"].mean()), "pitch_top5": float(test["top5"].mean()),
        "pitch_cross_entropy": mean_ce, "pitch_perplexity": math.exp(mean_ce),
        "step_mae": float(np.abs(clipped["step_median"] - test["step"]).mean()),
        "step_rmse": float(np.sqrt(((clipped["step_mean"] - test["step"]) ** 2).mean())),
        "duration_mae": float(np.abs(clipped["duration_median"] - test["duration"]).mean()),
        "duration_rmse": float(np.sqrt(((clipped["duration_mean"] - test["duration"]) ** 2).mean())),
        "negative_output_share": float(((test["step_mean"] < 0) | (test["duration_mean"] < 0)).mean()),
    }


def _baseline_metrics(test: dict[str, np.ndarray], data: NoteSequences, vocab_size: int) -> dict[str, float]:
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
        "pitch_top1": float(np.isin(pitch, order[:1]).mean()), "pitch_top5": float(np.isin(pitch, order[:5]).mean()),
        "pitch_cross_entropy": unigram_ce, "pitch_perplexity": math.exp(unigram_ce),
        "step_mae": float(np.abs(stats["step_median"] - test["step"]).mean()),
        "step_rmse": float(np.sqrt(((stats["step_mean"] - test["step"]) ** 2).mean())),
        "duration_mae": float(np.abs(stats["duration_median"] - test["duration"]).mean()),
        "duration_rmse": float(np.sqrt(((stats["duration_mean"] - test["duration"]) ** 2).mean())),
    }


def _sample_table(notes: np.ndarray, settings: Generate, per_temperature: int) -> pd.DataFrame:
    """One row per generated note: group (t<temperature>), sample index, pitch, timing in seconds."""
    frames = []
    rows = ((t, i) for t in settings.temperatures for i in range(per_temperature))
    for row, (temperature, index) in enumerate(rows):
        step, duration = notes[row, :, 1], notes[row, :, 2]
        start = np.cumsum(step)
        frames.append(pd.DataFrame({
            "group": f"t{temperature:g}", "temperature": temperature, "sample": index,
            "pitch": notes[row, :, 0].astype(int), "step": step, "duration": duration, "start": start,
            "end": start + duration, "velocity": settings.velocity}))
    return pd.concat(frames, ignore_index=True)


def _excerpts(data: NoteSequences, split: str, settings: Generate, count: int) -> list[pd.DataFrame]:
    """`count` runs of `num_notes` consecutive notes of a split, evenly spaced, each from t = 0."""
    features = data.features()
    excerpts = []
    for start in evenly_spaced(data.window_starts(split, settings.num_notes), count):
        pitch, step, duration = features[start : start + settings.num_notes].T.astype(np.float64)
        onset = np.cumsum(step) - step[0]
        excerpts.append(pd.DataFrame({"pitch": pitch.astype(int), "start": onset, "end": onset + duration,
                                      "velocity": settings.velocity}))
    return excerpts


def sample_stats(table: pd.DataFrame, data: NoteSequences, settings: Generate, seed: int) -> dict[str, float]:
    """Per temperature: diversity and timing spread of samples, next to test windows of equal length.

    A std ratio far below 1 or a repeated-pitch rate far above the test data's is the tutorial's
    known failure: generation collapsing onto one note or one rhythm. The test data's own band of
    the std ratio says how far from 1 real music lands under the same statistic.
    """
    num_notes = settings.num_notes
    test = data.split_mask("test")
    windows = [data.pitch[s : s + num_notes] for s in evenly_spaced(data.window_starts("test", num_notes), 64)]
    stats = {
        "test_unique_pitches": float(np.mean([len(np.unique(w)) for w in windows])),
        "test_repeated_pitch_rate": float(np.mean([(np.diff(w) == 0).mean() for w in windows])),
    } | excerpt_spread_band(data, settings, seed)
    for temperature, group in table.groupby("temperature"):
        by_sample = group.groupby("sample")["pitch"]
        key = f"t{temperature:g}"
        stats[f"{key}_unique_pitches"] = float(by_sample.nunique().mean())
        stats[f"{key}_repeated_pitch_rate"] = float(by_sample.apply(lambda p: (p.diff() == 0).mean()).mean())
        stats[f"{key}_step_std_ratio"] = float(group["step"].std() / data.step[test].std())
        stats[f"{key}_duration_std_ratio"] = float(group["duration"].std() / data.duration[test].std())
    return stats


def excerpt_spread_band(data: NoteSequences, settings: Generate, seed: int) -> dict[str, float]:
    """The step and duration std ratios of real music: `num_samples` random test excerpts of
    `num_notes` notes against the whole test split, drawn `spread_band.draws` times; the band's
    ends are percentiles of those ratios. A few long notes carry most of a duration's σ, so a
    sample of real excerpts lands well away from 1 too (0.79-1.05 on the embedded default)."""
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
        stats[f"test_{name}_std_ratio_low"], stats[f"test_{name}_std_ratio_high"] = float(low), float(high)
    return stats
