"""The next-note task over (pitch, step, duration), as in the TensorFlow music-generation tutorial.

Everything a next-note network shares: training windows and their transposition, the loss (pitch
cross-entropy plus the timing heads' losses), the sampler, test metrics beside the baselines a
useful model must beat, samples seeded from test windows with their statistics, and MIDI output. A
network family subclasses `NextNoteFamily` and brings only its `Config`, `build` and a network
that is a `NextNoteNetwork`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import nn

from etude.batches import evaluation_batches, evenly_spaced
from etude.diagnosis import (
    Judge,
    Remedy,
    Verdict,
    collapse_verdict,
    recent,
    scaled,
)
from etude.errors import DataError
from etude.family import Family, Results, Section
from etude.midi import midi_bytes, read_notes, write_notes
from etude.models.next_note import baselines
from etude.models.next_note.baselines import BaselineSettings
from etude.models.next_note.heads import (
    TimingBins,
    TimingHeads,
    draw_class,
    timing_bin,
    timing_edges,
)
from etude.models.next_note.metrics import (
    baseline_metrics,
    excerpts,
    model_metrics,
    pitch_class_diversity,
    sample_stats,
    sample_table,
    temperature_group,
)
from etude.music import ngram_repetition
from etude.params import Evaluate, Generate, Params, Strict
from etude.sequences import NoteSequences

NoteBatch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T, 3) raw notes, targets (B, 3)


class LossWeights(Strict):
    pitch: NonNegativeFloat
    step: NonNegativeFloat
    duration: NonNegativeFloat


class NextNoteConfig(Strict):
    """The task's settings, shared by every next-note network."""

    seq_len: Annotated[int, Field(ge=2)]
    vocab_size: Annotated[int, Field(ge=1, le=128)]
    dropout: Annotated[
        float, Field(ge=0, lt=1)
    ]  # the network's (note_rnn: between stacked LSTM layers)
    loss_weights: LossWeights
    timing_head: Literal[
        "mse", "bins"
    ]  # mse: the documents' regression; bins: a sampled categorical
    timing_bins: TimingBins  # bins heads (and a network's binned timing inputs)
    positive_pressure: NonNegativeFloat  # mse heads: MSE + pressure * max(-y_hat, 0)
    transpose_semitones: Annotated[int, Field(ge=0, le=24)]  # random transposition within +-N
    diagnostic_notes: Annotated[int, Field(ge=8)]  # length of the samples drawn after each epoch
    val_batch_size: PositiveInt  # windows per validation and test batch
    baselines: BaselineSettings  # the trivial predictors a model must beat (baselines.py)


class NextNoteNetwork(nn.Module):
    """What the task calls a network with: `forward(notes, state)` on raw notes (B, T, 3) returns
    (pitch logits, step, duration, state) at the last note; `timing` is its `TimingHeads`. The
    sampler starts from a seed window and goes on one note at a time, each continuing the state."""

    timing: TimingHeads

    def start(self, seeds: torch.Tensor):
        """The heads after a seed window (B, T, 3), and the state to continue from."""
        return self(seeds)

    def step(self, note: torch.Tensor, state):
        """The heads after one more note (B, 3), and the state to continue from."""
        return self(note[:, None, :], state)


def windows_at(features: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    """(B, seq_len + 1, 3): each window's inputs and, last, its target note."""
    return features[starts[:, None] + np.arange(seq_len + 1)]


def transpose(windows: np.ndarray, semitones: int, vocab: int, rng: np.random.Generator) -> None:
    """Shift each window by a random interval that keeps all of its pitches inside the
    vocabulary."""
    pitch = windows[:, :, 0]
    shift = rng.integers(-semitones, semitones + 1, size=len(windows))
    shift = np.clip(shift, -pitch.min(axis=1), vocab - 1 - pitch.max(axis=1))
    windows[:, :, 0] += shift[:, None]


def to_batch(windows: np.ndarray, device: torch.device) -> NoteBatch:
    tensor = torch.from_numpy(windows).to(device)
    return tensor[:, :-1], tensor[:, -1]


def draw_note(
    timing: TimingHeads,
    heads: tuple,
    temperatures: torch.Tensor,
    generator: torch.Generator,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(B, 3): a pitch, step and duration drawn from each row's heads (pitch logits, then the timing
    heads' outputs), at each row's temperature."""
    logits, step, duration = heads
    pitch = draw_class(logits, temperatures, generator)
    step, duration = (timing.draw(x, temperatures, generator) for x in (step, duration))
    return torch.stack([pitch.to(dtype), step, duration], dim=1)


@torch.inference_mode()
def sample(
    model: NextNoteNetwork,
    seeds: torch.Tensor,
    temperatures: torch.Tensor,
    num_notes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B, num_notes, 3) raw notes continuing each seed window at its row's temperature, one
    network step per note: the state carries the context."""
    model.eval()
    *heads, state = model.start(seeds)
    notes = []
    for _ in range(num_notes):
        notes.append(draw_note(model.timing, heads, temperatures, generator, seeds.dtype))
        *heads, state = model.step(notes[-1], state)
    return torch.stack(notes, dim=1)


def note_loss(
    model,
    logits: torch.Tensor,
    step: torch.Tensor,
    duration: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict]:
    """The weighted sum of pitch cross-entropy and the timing heads' losses, and each term, for
    predictions of (N, 3) target notes."""
    terms = {
        "pitch": F.cross_entropy(logits, target[:, 0].long()),
        "step": model.timing.loss(step, target[:, 1]),
        "duration": model.timing.loss(duration, target[:, 2]),
    }
    return weights.pitch * terms["pitch"] + weights.step * terms["step"] + weights.duration * terms[
        "duration"
    ], terms


def nearest_temperature(temperatures: list[float], reference: float) -> float:
    """The sampled temperature nearest `reference` (the lower one of a tie)."""
    return min(sorted(temperatures), key=lambda t: abs(t - reference))


class NextNoteFamily(Family):
    """The task's hooks; a subclass adds `Config` and `build`."""

    code = (
        "etude/models/next_note/baselines.py",
        "etude/models/next_note/heads.py",
        "etude/models/next_note/metrics.py",
        "etude/sequences.py",
        "etude/midi.py",
        "etude/music.py",
    )
    baselines = (
        "unigram pitch frequencies, the training median (MAE) and mean (RMSE) "
        "of step and duration, and repeating the last pitch"
    )
    group_labels: ClassVar[dict[str, str]] = {"repeat_last": "repeat last pitch"}

    def representation(self, config) -> str:
        return "notes"

    def load_data(self, config, path: Path) -> NoteSequences:
        return NoteSequences.load(path)

    def split_size(self, data: NoteSequences, config, split: str) -> int:
        return len(data.window_starts(split, config.seq_len + 1))

    def example(self, config) -> tuple[str, str]:
        what = f"window of {config.seq_len + 1} notes (seq_len {config.seq_len} and the next note)"
        return what, "variants.{variant}.seq_len"

    def model_meta(self, data: NoteSequences, config) -> dict:
        return {"stats": data.stats}

    def train_batches(
        self, data: NoteSequences, config, epoch: int, device: torch.device
    ) -> Iterator[NoteBatch]:
        rng = np.random.default_rng([config.seed, epoch])
        starts = rng.permutation(data.window_starts("train", config.seq_len + 1))[
            : config.samples_per_epoch
        ]
        features = data.features()
        for i in range(0, len(starts) - config.batch_size + 1, config.batch_size):
            windows = windows_at(features, starts[i : i + config.batch_size], config.seq_len)
            if config.transpose_semitones:
                transpose(windows, config.transpose_semitones, config.vocab_size, rng)
            yield to_batch(windows, device)

    def eval_batches(
        self, data: NoteSequences, config, split: str, limit: int | None, device: torch.device
    ) -> Iterator[NoteBatch]:
        features = data.features()
        what, _ = self.example(config)
        for starts in evaluation_batches(
            data.window_starts(split, config.seq_len + 1), limit, config.val_batch_size, split, what
        ):
            yield to_batch(windows_at(features, starts, config.seq_len), device)

    def loss(self, model, batch: NoteBatch, config, epoch: int | None) -> tuple[torch.Tensor, dict]:
        """The next note after each window."""
        inputs, target = batch
        logits, step, duration, _ = model(inputs)
        return note_loss(model, logits, step, duration, target, config.loss_weights)

    @torch.no_grad()
    def epoch_measures(
        self, model, data: NoteSequences, config, epoch: int, device: torch.device
    ) -> dict[str, float]:
        """Per epoch, `diagnostic_samples` continuations of validation windows (temperature 1,
        seeded by epoch) against the notes that really followed: the spread of sampled steps and
        durations (MSE heads collapse to the mean: the tutorial's timing collapse), 4-gram and
        repeated-pitch rates, and how much samples differ from each other."""
        model.eval()
        length = config.diagnostic_notes
        starts = evenly_spaced(
            data.window_starts("validation", config.seq_len + length), config.diagnostic_samples
        )
        features = data.features()
        seeds = torch.from_numpy(features[starts[:, None] + np.arange(config.seq_len)]).to(device)
        generator = torch.Generator(device=device).manual_seed(config.seed + epoch)
        notes = (
            sample(model, seeds, torch.ones(len(seeds), device=device), length, generator)
            .cpu()
            .numpy()
        )
        real = features[starts[:, None] + config.seq_len + np.arange(length)]
        spread = notes[:, :, 1:].reshape(-1, 2).std(0) / np.maximum(
            real[:, :, 1:].reshape(-1, 2).std(0), 1e-12
        )
        sampled, followed = notes[:, :, 0].astype(np.int64), real[:, :, 0].astype(np.int64)
        data_diversity = pitch_class_diversity(followed)
        return {
            "val_baseline_pitch_ce": self.validation_baseline(data, config),
            "sample_step_std_ratio": float(spread[0]),
            "sample_duration_std_ratio": float(spread[1]),
            "sample_ngram_repetition": float(np.mean([ngram_repetition(row) for row in sampled])),
            "data_ngram_repetition": float(np.mean([ngram_repetition(row) for row in followed])),
            "sample_repeated_pitch_rate": float((np.diff(sampled, axis=1) == 0).mean()),
            "data_repeated_pitch_rate": float((np.diff(followed, axis=1) == 0).mean()),
            "sample_diversity_ratio": pitch_class_diversity(sampled) / data_diversity
            if data_diversity
            else 0.0,
        }

    def validation_baseline(self, data: NoteSequences, config) -> float:
        """The best pitch cross-entropy of the baseline ladder on the validation loss's own windows:
        what `below_baseline` compares the validation pitch loss with."""
        starts = evenly_spaced(
            data.window_starts("validation", config.seq_len + 1), config.val_max_windows
        )
        features = data.features()
        windows = features[starts[:, None] + np.arange(config.seq_len + 1)]
        context = baselines.context_of(windows[:, :-1], windows[:, -1, 0])
        return baselines.best(baselines.pitch_ladder(data, context, config.baselines))[1]

    champion_metrics: ClassVar[tuple[tuple[str, str], ...]] = (
        ("test.pitch_cross_entropy", "lower"),
        ("music.t1.oa_mean", "higher"),
    )
    headline_metrics: ClassVar[dict[str, str]] = {
        "pitch_cross_entropy": "lower",
        "pitch_top1": "higher",
        "step_mae": "lower",
        "duration_mae": "lower",
    }

    # Remedies of the next-note pathologies, by the names diagnosis.ladders uses.
    remedies: ClassVar[dict[str, Remedy]] = {
        "timing_bins": Remedy(
            "distributional timing heads: an MSE head predicts the conditional mean, and more "
            "context only narrows the gap",
            lambda c, r, v: {"timing_head": "bins"},
        ),
        "longer_context": Remedy(
            "a longer context (the documents' version 2 doubled seq_len)",
            lambda c, r, v: {"seq_len": round(r.context_factor * c.seq_len)},
        ),
        "gentler_lr": Remedy(
            "a lower learning rate and more epochs",
            lambda c, r, v: {"lr": scaled(c.lr, r.mode_collapse_lr)},
        ),
        "transposition": Remedy(
            "more data by transposition augmentation",
            lambda c, r, v: {
                "transpose_semitones": max(r.transpose_semitones, c.transpose_semitones)
            },
        ),
    }

    def verdicts(self, history: pd.DataFrame, judge: Judge) -> list[Verdict]:
        """Step and duration collapse (the tutorial's MSE heads), repetitive samples, samples
        alike."""
        h, settings = history.dropna(subset=["val_loss"]), judge.settings
        if not len(h):
            return []
        verdicts = []
        for head in ("step", "duration"):
            verdicts += collapse_verdict(
                f"{head}_collapse",
                h,
                f"sample_{head}_std_ratio",
                settings.collapse_std_ratio,
                judge,
                f"the spread of sampled {head}s is",
            )
        sampled, data = (
            recent(h, f"{kind}_ngram_repetition", settings) for kind in ("sample", "data")
        )
        excess = sampled / data if data > 0 else (np.inf if sampled > 0 else 0.0)
        verdicts.append(
            judge(
                "repetitive_generation",
                bool(sampled > 0 and sampled > settings.repetition_factor * data),
                f"{sampled:.0%} of sampled pitch 4-grams recur within a sample against "
                f"{data:.0%} in the data (repeated pitches "
                f"{recent(h, 'sample_repeated_pitch_rate', settings):.0%} vs "
                f"{recent(h, 'data_repeated_pitch_rate', settings):.0%}; "
                "medians of the last epochs)",
                float(min(excess, np.finfo(np.float32).max)),
                settings.repetition_factor,
                "lower",
                int(h["epoch"].iloc[-1]) + 1,
            )
        )
        if "val_baseline_pitch_ce" in h:
            model, table = (
                recent(h, "val_pitch_loss", settings),
                recent(h, "val_baseline_pitch_ce", settings),
            )
            verdicts.append(
                judge(
                    "below_baseline",
                    model >= table,
                    f"validation pitch cross-entropy {model:.3f} nats against {table:.3f} for the "
                    "best trivial baseline (n-gram tables fitted on the training split; medians of "
                    "the last epochs)",
                    model - table,
                    0.0,
                    "lower",
                    int(h["epoch"].iloc[-1]) + 1,
                )
            )
        verdicts += collapse_verdict(
            "mode_collapse",
            h,
            "sample_diversity_ratio",
            settings.diversity_ratio,
            judge,
            "samples differ from each other (pitch-class histograms)",
        )
        return verdicts

    @torch.no_grad()
    def evaluate(
        self, model, data: NoteSequences, config, settings: Evaluate, device: torch.device
    ) -> dict[str, dict[str, float]]:
        """Test-split metrics per head, each beside the baselines that a useful model must beat."""
        model.eval()
        columns: dict[str, list[torch.Tensor]] = {
            k: []
            for k in (
                "ce",
                "top1",
                "top5",
                "repeat_last",
                "pitch",
                "step_median",
                "step_mean",
                "step",
                "duration_median",
                "duration_mean",
                "duration",
                "previous",
                "before_previous",
                "step_bin_ce",
                "duration_bin_ce",
            )
        }
        for inputs, target in self.eval_batches(data, config, "test", settings.max_windows, device):
            logits, step, duration, _ = model(inputs)
            pitch = target[:, 0].long()
            top = logits.topk(5, dim=1).indices
            (step_median, step_mean), (duration_median, duration_mean) = map(
                model.timing.point, (step, duration)
            )
            for key, value in (
                ("ce", F.cross_entropy(logits, pitch, reduction="none")),
                ("top1", top[:, 0] == pitch),
                ("top5", (top == pitch[:, None]).any(dim=1)),
                ("repeat_last", inputs[:, -1, 0].long() == pitch),
                ("pitch", pitch),
                ("step_median", step_median),
                ("step_mean", step_mean),
                ("step", target[:, 1]),
                ("duration_median", duration_median),
                ("duration_mean", duration_mean),
                ("duration", target[:, 2]),
                ("previous", inputs[:, -1, 0]),
                ("before_previous", inputs[:, -2, 0]),
            ):
                columns[key].append(value)
            if config.timing_head == "bins":
                for head, output, seconds in (
                    ("step", step, target[:, 1]),
                    ("duration", duration, target[:, 2]),
                ):
                    bins = timing_bin(seconds, model.timing.edges)
                    columns[f"{head}_bin_ce"].append(
                        F.cross_entropy(output, bins, reduction="none")
                    )
        test = {k: torch.cat(v).double().cpu().numpy() for k, v in columns.items() if v}
        metrics = model_metrics(test)
        if config.timing_head == "bins":
            metrics |= {
                f"{head}_bin_cross_entropy": float(test[f"{head}_bin_ce"].mean())
                for head in ("step", "duration")
            }
        return {
            "model": metrics,
            "baseline": baseline_metrics(test, data, config.vocab_size),
            "baseline_ladder": self.baseline_ladder(data, config, test),
            "repeat_last": {"pitch_top1": float(test["repeat_last"].mean())},
            "windows": {"count": float(len(test["ce"]))},
        }

    def baseline_ladder(self, data: NoteSequences, config, test: dict[str, np.ndarray]) -> dict:
        """The trivial predictors on the test targets: pitch cross-entropy of each n-gram table,
        the training median's MAE, and the binned unigram's cross-entropy of each timing."""
        context = baselines.Context(
            test["pitch"].astype(np.int64),
            test["previous"].astype(np.int64),
            test["before_previous"].astype(np.int64),
        )
        ladder = {
            f"{name}_cross_entropy": ce
            for name, ce in baselines.pitch_ladder(data, context, config.baselines).items()
        }
        edges = timing_edges(config.timing_bins)
        train = data.split_mask("train")
        for head in ("step", "duration"):
            seconds = getattr(data, head)
            ladder[f"{head}_median_mae"] = float(
                np.abs(data.stats[f"{head}_median"] - test[head]).mean()
            )
            ladder[f"{head}_bin_unigram_cross_entropy"] = baselines.binned_unigram(
                timing_bin(torch.from_numpy(seconds[train]), edges).numpy(),
                timing_bin(torch.from_numpy(test[head]).float(), edges).numpy(),
                config.timing_bins.count,
                config.baselines.smoothing,
            )
        return ladder

    def generate(
        self,
        model,
        data: NoteSequences,
        config,
        settings: Generate,
        out_dir: Path,
        device: torch.device,
    ) -> tuple[pd.DataFrame, dict[str, float]]:
        """Samples per temperature, seeded from test windows, the first `midi_files` written as
        MIDI; returns every sample's notes and their statistics."""
        seed_starts = evenly_spaced(
            data.window_starts("test", config.seq_len), settings.num_samples
        )
        if len(seed_starts) < settings.num_samples:
            raise DataError(
                f"the test split has {len(seed_starts)} seed windows of {config.seq_len} notes, "
                f"generate.num_samples is {settings.num_samples}"
            )
        seeds = torch.from_numpy(data.features()[seed_starts[:, None] + np.arange(config.seq_len)])
        temps = torch.tensor(settings.temperatures, dtype=torch.float32)
        generator = torch.Generator(device=device).manual_seed(config.seed)
        model.eval()
        notes = sample(
            model,
            seeds.repeat(len(temps), 1, 1).to(device),
            temps.repeat_interleave(len(seeds)).to(device),
            settings.num_notes,
            generator,
        )
        table = sample_table(notes.cpu().numpy().astype(np.float64), settings, len(seeds))
        out_dir.mkdir(parents=True, exist_ok=True)
        for (group, index), frame in table.groupby(["group", "sample"], sort=False):
            if index < settings.midi_files:
                write_notes(frame, out_dir / f"{group}_s{index}.mid", settings.program)
        # Test excerpts of the same length, to listen to beside the samples.
        for index, excerpt in enumerate(excerpts(data, "test", settings, settings.midi_files)):
            write_notes(excerpt, out_dir / f"test_s{index}.mid", settings.program)
        return table, sample_stats(table, data, settings, config.seed)

    def judge_samples(
        self, data: NoteSequences, config, settings: Generate, samples: pd.DataFrame
    ) -> dict:
        """Each temperature's samples against test (and, for the ceiling, training) excerpts of
        `num_notes` consecutive notes, on clock beats: performance MIDI has no musical ones."""
        from etude import music

        groups = {
            group: [notes for _, notes in frame.groupby("sample")]
            for group, frame in samples.groupby("group", sort=False)
        }
        test, train = (
            excerpts(data, split, settings, settings.reference_excerpts)
            for split in ("test", "train")
        )
        return music.judge(
            groups, test, train, 60.0 / settings.clock_bpm, settings.clock_steps_per_beat
        )

    def report_sections(self, result: Results, config, settings) -> list[Section]:
        from etude.figures import piano_roll_figure

        return [
            Section(piano_roll_figure(result, settings.piano_roll_seconds, first_sample_only=True))
        ]

    # ---- serving: a continuation of the request's primer ---------------------------------------
    request_fields: ClassVar[dict[str, tuple[str, bool]]] = {
        "primer": ("matrix", False),
        "primer_midi": ("bytes", False),
        "n_notes": ("long", True),
        "temperature": ("double", True),
        "seed": ("long", True),
    }

    def request_example(self, config, meta: dict[str, Any]) -> dict[str, Any]:
        """A C major arpeggio as the primer (pitch, step s, duration s per note)."""
        primer = [[60 + p, 0.0 if i == 0 else 0.25, 0.25] for i, p in enumerate((0, 4, 7, 12))]
        return {"primer": primer, "n_notes": 16, "temperature": 1.0, "seed": config.seed}

    def respond(
        self, model, config, meta: dict[str, Any], request: dict[str, Any], settings: Generate
    ) -> dict[str, Any]:
        """`n_notes` notes continuing `primer` (notes as [pitch, step, duration]) or `primer_midi`
        (a MIDI file's bytes), drawn at `temperature` from `seed`: the notes (times from the
        primer's last onset) and their MIDI file."""
        primer = primer_of(request, config)
        n_notes, temperature, seed = (
            int(_required(request, "n_notes")),
            float(_required(request, "temperature")),
            int(_required(request, "seed")),
        )
        if n_notes < 1 or temperature <= 0:
            raise DataError(f"request: n_notes {n_notes} and temperature {temperature} must be > 0")
        generator = torch.Generator().manual_seed(seed)
        notes = sample(
            model,
            torch.from_numpy(primer[None]),
            torch.tensor([temperature]),
            n_notes,
            generator,
        )[0].numpy()
        start = np.cumsum(notes[:, 1].astype(np.float64))
        table = pd.DataFrame(
            {
                "pitch": notes[:, 0].astype(np.int64),
                "velocity": settings.velocity,
                "start": start,
                "end": start + notes[:, 2].astype(np.float64),
            }
        )
        return {
            "notes": table.to_dict("records"),
            "midi": midi_bytes(table, settings.program),
        }

    def comparison(self, result: Results, config, params: Params) -> tuple[str, dict[str, Any]]:
        """Pitch prediction, the spread of sampled step and duration against the test data's (an MSE
        head collapses it towards 0; 1 is the data's) beside the band real test excerpts land in
        under the same statistic, and OA against the test excerpts; at the temperature nearest the
        report's."""
        temperature = nearest_temperature(
            params.generate.temperatures, params.report.reference_temperature
        )
        group, generation = temperature_group(temperature), result.generation
        band = params.generate.spread_band.percentile
        title = (
            f"Next-note models at temperature {_label(temperature)} "
            "(σ ratio: generated / test spread, beside the "
            f"{band:g}-{100 - band:g} % band of real test excerpts "
            "as many and as long as the samples)"
        )
        row = {
            "model": config.model,
            "timing head": config.timing_head,
            "pitch cross-entropy": result.evaluation["model"]["pitch_cross_entropy"],
            "pitch top-1": result.evaluation["model"]["pitch_top1"],
            "step σ ratio": generation[f"{group}_step_std_ratio"],
            "test excerpts' step σ ratio": _spread_band(generation, "step"),
            "duration σ ratio": generation[f"{group}_duration_std_ratio"],
            "test excerpts' duration σ ratio": _spread_band(generation, "duration"),
            "OA mean": result.music["groups"].get(group, {}).get("oa_mean"),
        }
        return title, row


def primer_of(request: dict[str, Any], config) -> np.ndarray:
    """(T, 3) float32 raw notes of a request's primer, its last `seq_len` notes at most."""
    if "primer_midi" in request:
        notes = read_notes(request["primer_midi"], "request primer_midi")
        start = notes["start"].to_numpy()
        step = np.diff(start, prepend=start[:1])
        primer = np.stack([notes["pitch"], step, notes["end"] - start], axis=1)
    else:
        primer = np.asarray(_required(request, "primer"), dtype=np.float64)
        if primer.ndim != 2 or primer.shape[1] != 3 or not len(primer):
            raise DataError(
                f"request primer: expected notes as [pitch, step, duration], got shape "
                f"{primer.shape}"
            )
    if not np.isfinite(primer).all() or (primer[:, 1:] < 0).any():
        raise DataError("request primer: steps and durations must be finite and not negative")
    if ((primer[:, 0] < 0) | (primer[:, 0] >= config.vocab_size)).any():
        raise DataError(f"request primer: pitches must lie in 0..{config.vocab_size - 1}")
    return primer[-config.seq_len :].astype(np.float32)


def _required(request: dict[str, Any], key: str) -> Any:
    if key not in request:
        raise DataError(f"request: {key!r} is missing (keys: {sorted(request)})")
    return request[key]


def _label(temperature: float) -> str:
    """1.0 as "1.0", 1.25 as "1.25"."""
    return f"{temperature:.1f}" if round(temperature, 1) == temperature else f"{temperature:g}"


def _spread_band(generation: dict, name: str) -> str:
    low, high = (
        generation.get(f"test_{name}_std_ratio_low"),
        generation.get(f"test_{name}_std_ratio_high"),
    )
    return "-" if low is None else f"{low:.2f}–{high:.2f}"
