"""Next-note LSTM over (pitch, step, duration): the TensorFlow tutorial model and its stacked version.

Everything specific to this family is here: the network, how training windows are batched, the
loss, test-split metrics beside trivial baselines, and the sampler. The generic loop lives in
etude.training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from etude.midi import write_notes
from etude.params import Evaluate, Generate, NoteRnnVariant
from etude.pipeline import variant_input
from etude.sequences import NoteSequences
from etude.training import evaluation_batches, evenly_spaced

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T, 3) raw notes, targets (B, 3)


class NoteRNN(nn.Module):
    """LSTM stack with three heads. Takes raw notes; normalises them itself.

    Normalisation lives in the model (buffers from the training split), so the sampler feeds back
    exactly what training saw: the tutorial's loop appended unscaled pitch to a pitch/128 window.
    """

    def __init__(self, config: NoteRnnVariant, stats: dict[str, float]):
        super().__init__()
        self.register_buffer("shift", torch.tensor([0.0, stats["step_mean"], stats["duration_mean"]]))
        self.register_buffer("scale", torch.tensor([float(config.vocab_size), stats["step_std"], stats["duration_std"]]))
        sizes = [3, *config.lstm_units]
        self.lstms = nn.ModuleList(nn.LSTM(i, o, batch_first=True) for i, o in zip(sizes, sizes[1:]))
        self.dropout = nn.Dropout(config.dropout)
        self.pitch = nn.Linear(sizes[-1], config.vocab_size)
        self.step = nn.Linear(sizes[-1], 1)
        self.duration = nn.Linear(sizes[-1], 1)

    def forward(self, notes: torch.Tensor, state: list | None = None):
        """Heads at the last time step, and the LSTM state to continue from."""
        h = (notes - self.shift) / self.scale
        new_state = []
        for i, lstm in enumerate(self.lstms):
            if i:
                h = self.dropout(h)
            h, s = lstm(h, None if state is None else state[i])
            new_state.append(s)
        last = h[:, -1]
        return self.pitch(last), self.step(last).squeeze(-1), self.duration(last).squeeze(-1), new_state


def load_data(config: NoteRnnVariant) -> NoteSequences:
    return NoteSequences.load(Path(variant_input(config)))


def build(config: NoteRnnVariant, data: NoteSequences) -> NoteRNN:
    return NoteRNN(config, data.stats)


def _windows(features: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    return features[starts[:, None] + np.arange(seq_len + 1)]


def _transpose(windows: np.ndarray, semitones: int, vocab: int, rng: np.random.Generator) -> None:
    """Shift each window by a random interval that keeps all of its pitches inside the vocabulary."""
    pitch = windows[:, :, 0]
    shift = rng.integers(-semitones, semitones + 1, size=len(windows))
    shift = np.clip(shift, -pitch.min(axis=1), vocab - 1 - pitch.max(axis=1))
    windows[:, :, 0] += shift[:, None]


def _to_batch(windows: np.ndarray, device: torch.device) -> Batch:
    tensor = torch.from_numpy(windows).to(device)
    return tensor[:, :-1], tensor[:, -1]


def train_batches(data: NoteSequences, config: NoteRnnVariant, epoch: int, device: torch.device) -> Iterator[Batch]:
    # The epoch's order depends on (seed, epoch) alone, so a resumed run draws the same batches.
    rng = np.random.default_rng([config.seed, epoch])
    starts = data.window_starts("train", config.seq_len + 1)
    starts = rng.permutation(starts)[: config.samples_per_epoch]
    features = data.features()
    for i in range(0, len(starts) - config.batch_size + 1, config.batch_size):
        windows = _windows(features, starts[i : i + config.batch_size], config.seq_len)
        if config.transpose_semitones:
            _transpose(windows, config.transpose_semitones, config.vocab_size, rng)
        yield _to_batch(windows, device)


def eval_batches(data: NoteSequences, config: NoteRnnVariant, split: str, limit: int | None,
                 device: torch.device, batch_size: int = 1024) -> Iterator[Batch]:
    features = data.features()
    for starts in evaluation_batches(data.window_starts(split, config.seq_len + 1), limit, batch_size, split,
                                     f"window of {config.seq_len + 1} notes"):
        yield _to_batch(_windows(features, starts, config.seq_len), device)


def positive_pressure_mse(pred: torch.Tensor, target: torch.Tensor, pressure: float) -> torch.Tensor:
    """MSE plus a penalty on negative outputs: steps and durations cannot be negative."""
    return ((target - pred) ** 2 + pressure * torch.clamp(-pred, min=0)).mean()


def loss(model: NoteRNN, batch: Batch, config: NoteRnnVariant,
         epoch: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    inputs, target = batch
    logits, step, duration, _ = model(inputs)
    terms = {
        "pitch": F.cross_entropy(logits, target[:, 0].long()),
        "step": positive_pressure_mse(step, target[:, 1], config.positive_pressure),
        "duration": positive_pressure_mse(duration, target[:, 2], config.positive_pressure),
    }
    weights = config.loss_weights
    total = weights.pitch * terms["pitch"] + weights.step * terms["step"] + weights.duration * terms["duration"]
    return total, terms


@torch.no_grad()
def evaluate(model: NoteRNN, data: NoteSequences, config: NoteRnnVariant, settings: Evaluate,
             device: torch.device) -> dict[str, dict[str, float]]:
    """Test-split metrics per head, each beside the baselines that a useful model must beat."""
    model.eval()
    ce, top1, top5, repeat_last, prev_pitch, pitch_true = [], [], [], [], [], []
    step_pred, step_true, dur_pred, dur_true = [], [], [], []
    for inputs, target in eval_batches(data, config, "test", settings.max_windows, device):
        logits, step, duration, _ = model(inputs)
        pitch = target[:, 0].long()
        ce.append(F.cross_entropy(logits, pitch, reduction="none"))
        top = logits.topk(5, dim=1).indices
        top1.append(top[:, 0] == pitch)
        top5.append((top == pitch[:, None]).any(dim=1))
        repeat_last.append(inputs[:, -1, 0].long() == pitch)
        pitch_true.append(pitch)
        step_pred.append(step), step_true.append(target[:, 1])
        dur_pred.append(duration), dur_true.append(target[:, 2])
    cat = lambda xs: torch.cat(xs).double().cpu().numpy()  # noqa: E731
    ce_, pitch_ = cat(ce), cat(pitch_true).astype(np.int64)
    sp, st, dp, dt = cat(step_pred), cat(step_true), cat(dur_pred), cat(dur_true)

    counts = data.train_pitch_counts[: config.vocab_size].astype(np.float64) + 1.0  # add-one smoothing
    unigram = counts / counts.sum()
    order = np.argsort(-counts, kind="stable")
    step_median, dur_median = data.stats["step_median"], data.stats["duration_median"]
    mean_ce = float(ce_.mean())
    unigram_ce = float(-np.log(unigram[pitch_]).mean())
    return {
        "model": {
            "pitch_top1": float(cat(top1).mean()), "pitch_top5": float(cat(top5).mean()),
            "pitch_cross_entropy": mean_ce, "pitch_perplexity": math.exp(mean_ce),
            "step_mae": float(np.abs(np.maximum(sp, 0) - st).mean()),
            "step_rmse": float(np.sqrt(((np.maximum(sp, 0) - st) ** 2).mean())),
            "duration_mae": float(np.abs(np.maximum(dp, 0) - dt).mean()),
            "duration_rmse": float(np.sqrt(((np.maximum(dp, 0) - dt) ** 2).mean())),
            "negative_output_share": float(((sp < 0) | (dp < 0)).mean()),
        },
        # The best constant predictor of each metric, under the same name: unigram pitch
        # frequencies, the training median for MAE and the training mean for RMSE (an MSE-trained
        # head competes with the mean).
        "baseline": {
            "pitch_top1": float(np.isin(pitch_, order[:1]).mean()),
            "pitch_top5": float(np.isin(pitch_, order[:5]).mean()),
            "pitch_cross_entropy": unigram_ce, "pitch_perplexity": math.exp(unigram_ce),
            "step_mae": float(np.abs(step_median - st).mean()),
            "step_rmse": float(np.sqrt(((data.stats["step_mean"] - st) ** 2).mean())),
            "duration_mae": float(np.abs(dur_median - dt).mean()),
            "duration_rmse": float(np.sqrt(((data.stats["duration_mean"] - dt) ** 2).mean())),
        },
        "repeat_last": {"pitch_top1": float(cat(repeat_last).mean())},
        "windows": {"count": float(len(ce_))},
    }


@torch.inference_mode()
def sample(model: NoteRNN, seeds: torch.Tensor, temperatures: torch.Tensor, num_notes: int,
           generator: torch.Generator) -> torch.Tensor:
    """(B, num_notes, 3) raw notes. One LSTM step per note: the state carries the context."""
    model.eval()
    logits, step, duration, state = model(seeds)
    notes = []
    for _ in range(num_notes):
        # Inverse-CDF sampling: one uniform number per row. torch.multinomial draws one per class,
        # which made it 60% of a sampling step at batch 256.
        cdf = torch.softmax(logits / temperatures[:, None], dim=-1).cumsum(dim=-1)
        u = torch.rand(len(cdf), 1, generator=generator, device=cdf.device)
        pitch = (cdf < u).sum(dim=-1).clamp(max=cdf.shape[-1] - 1)
        note = torch.stack([pitch.to(seeds.dtype), step.clamp(min=0), duration.clamp(min=0)], dim=1)
        notes.append(note)
        logits, step, duration, state = model(note[:, None, :], state)
    return torch.stack(notes, dim=1)


def generate(model: NoteRNN, data: NoteSequences, config: NoteRnnVariant, settings: Generate,
             out_dir: Path, device: torch.device) -> tuple[pd.DataFrame, dict[str, float]]:
    """Samples per temperature, seeded from test windows, the first `midi_files` written as MIDI;
    returns every sample's notes and their statistics."""
    seed_starts = evenly_spaced(data.window_starts("test", config.seq_len), settings.num_samples)
    if len(seed_starts) < settings.num_samples:
        raise ValueError(f"the test split has {len(seed_starts)} seed windows, generate.num_samples is {settings.num_samples}")
    seeds = torch.from_numpy(data.features()[seed_starts[:, None] + np.arange(config.seq_len)])
    temps = torch.tensor(settings.temperatures, dtype=torch.float32)
    batch_seeds = seeds.repeat(len(temps), 1, 1).to(device)
    batch_temps = temps.repeat_interleave(len(seeds)).to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    notes = sample(model, batch_seeds, batch_temps, settings.num_notes, generator).cpu().numpy().astype(np.float64)

    out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for row, (temp, index) in enumerate((t, i) for t in settings.temperatures for i in range(len(seeds))):
        pitch, step, duration = notes[row, :, 0].astype(int), notes[row, :, 1], notes[row, :, 2]
        start = np.cumsum(step)
        frame = pd.DataFrame({"group": f"t{temp:g}", "temperature": temp, "sample": index, "pitch": pitch, "step": step,
                              "duration": duration, "start": start, "end": start + duration,
                              "velocity": settings.velocity})
        frames.append(frame)
        if index < settings.midi_files:
            write_notes(frame, out_dir / f"t{temp:g}_s{index}.mid", settings.program)
    table = pd.concat(frames, ignore_index=True)
    return table, sample_stats(table, data, settings.num_notes)


def sample_stats(table: pd.DataFrame, data: NoteSequences, num_notes: int) -> dict[str, float]:
    """Per temperature: diversity and timing spread of samples, next to test windows of equal length.

    A std ratio far below 1 or a repeated-pitch rate far above the test data's is the tutorial's
    known failure: generation collapsing onto one note or one rhythm.
    """
    test = data.split_mask("test")
    windows = [data.pitch[s : s + num_notes] for s in evenly_spaced(data.window_starts("test", num_notes), 64)]
    stats = {
        "test_unique_pitches": float(np.mean([len(np.unique(w)) for w in windows])),
        "test_repeated_pitch_rate": float(np.mean([(np.diff(w) == 0).mean() for w in windows])),
    }
    for temp, group in table.groupby("temperature"):
        by_sample = group.groupby("sample")["pitch"]
        key = f"t{temp:g}"
        stats[f"{key}_unique_pitches"] = float(by_sample.nunique().mean())
        stats[f"{key}_repeated_pitch_rate"] = float(by_sample.apply(lambda p: (p.diff() == 0).mean()).mean())
        stats[f"{key}_step_std_ratio"] = float(group["step"].std() / data.step[test].std())
        stats[f"{key}_duration_std_ratio"] = float(group["duration"].std() / data.duration[test].std())
    return stats
