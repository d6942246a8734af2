"""RhythmVAE / MelodyVAE (M4L line): a dense VAE over onset, velocity, (duration,) timeshift grids.

Encoder: one branch per feature, Dense -> BatchNorm -> LeakyReLU -> Dropout, concatenated ->
Dense -> (mu, log sigma^2). Decoder: Dense -> one head per feature, Dense -> BN -> LeakyReLU ->
Dense(cells): sigmoid onset (as logits, for a stable BCE) and velocity, bounded duration, tanh
timeshift. Loss: onset BCE + velocity, duration and timeshift MSE, summed over cells, plus KL, with
the MelodyVAE training fixes (KL annealing, timeshift ramp, masking) as parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from etude.batches import evenly_spaced
from etude.diagnosis import Judge, Remedy, Verdict, collapse_verdict, fired, raised, recent
from etude.errors import DataError
from etude.family import Results, Section
from etude.grids import FEATURES, GridSet, decode
from etude.midi import midi_bytes, write_notes
from etude.models.vae import (
    Batch,
    VaeConfig,
    VaeFamily,
    collapse_warning,
    encode_decode,
    kl_weight,
    latent_stats,
)
from etude.params import Evaluate, Generate, Grid, Strict


class LossCoefficients(Strict):
    onset: NonNegativeFloat
    velocity: NonNegativeFloat
    duration: NonNegativeFloat
    timeshift: NonNegativeFloat


class GridVaeConfig(VaeConfig):
    representation: Literal["rhythm", "melody"]
    encoder_units: PositiveInt
    decoder_units: PositiveInt
    head_units: PositiveInt
    leaky_slope: NonNegativeFloat
    loss: LossCoefficients
    mask_to_onsets: bool  # velocity/duration/timeshift error on onset cells only
    timeshift_ramp_epochs: NonNegativeInt
    onset_threshold: Annotated[
        float, Field(gt=0, lt=1)
    ]  # decoding threshold: metrics and samples (the M4L knob)
    collapse_variance: PositiveFloat  # decoded timeshift variance below this: collapsed


class GridVAE(nn.Module):
    def __init__(
        self,
        config: GridVaeConfig,
        shape: tuple[int, int, int],
        duration_range: tuple[float, float],
    ):
        super().__init__()
        self.features = FEATURES[config.representation]
        n_features, rows, steps = shape
        self.shape, cells = shape, rows * steps
        self.duration_range = duration_range

        def block(n_in: int, n_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(n_in, n_out),
                nn.BatchNorm1d(n_out, momentum=config.batchnorm_momentum),
                nn.LeakyReLU(config.leaky_slope),
                nn.Dropout(config.dropout),
            )

        self.branches = nn.ModuleList(block(cells, config.encoder_units) for _ in range(n_features))
        self.merge = block(n_features * config.encoder_units, config.encoder_units)
        self.mu = nn.Linear(config.encoder_units, config.latent_dim)
        self.logvar = nn.Linear(config.encoder_units, config.latent_dim)
        self.expand = block(config.latent_dim, config.decoder_units)
        self.heads = nn.ModuleList(
            nn.Sequential(
                block(config.decoder_units, config.head_units), nn.Linear(config.head_units, cells)
            )
            for _ in range(n_features)
        )

    def encode(self, grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = grids.flatten(2)
        h = self.merge(
            torch.cat([branch(flat[:, f]) for f, branch in enumerate(self.branches)], dim=1)
        )
        return self.mu(h), self.logvar(h)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """(B, F, R, T) pre-activation outputs; onset stays a logit."""
        h = self.expand(z)
        return torch.stack([head(h) for head in self.heads], dim=1).view(len(z), *self.shape)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        out = []
        for f, name in enumerate(self.features):
            x = raw[:, f]
            if name in ("onset", "velocity"):
                out.append(torch.sigmoid(x))
            elif name == "duration":
                lo, hi = self.duration_range
                out.append(lo + (hi - lo) * torch.sigmoid(x))
            else:
                out.append(torch.tanh(x))
        return torch.stack(out, dim=1)

    def forward(self, grids: torch.Tensor):
        mu, logvar = self.encode(grids)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode_raw(z), mu, logvar


def timeshift_weight(config: GridVaeConfig, epoch: int | None) -> float:
    ramp = config.timeshift_ramp_epochs
    return 1.0 if ramp == 0 or epoch is None else min(1.0, (epoch + 1) / ramp)


def loss_weights(
    config: GridVaeConfig, features: tuple[str, ...], epoch: int | None
) -> dict[str, float]:
    """Each loss term's weight at `epoch`: coefficients, the timeshift ramp and the KL schedule."""
    coef = config.loss.model_dump()
    weights = {name: coef[name] for name in features}
    weights["timeshift"] *= timeshift_weight(config, epoch)
    weights["kl"] = kl_weight(config.kl, epoch)
    return weights


def _onset_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = float((true & pred).sum())
    precision = tp / max(pred.sum(), 1)
    recall = tp / max(true.sum(), 1)
    return {
        "onset_precision": precision,
        "onset_recall": recall,
        "onset_f1": 0.0 if tp == 0 else 2 * precision * recall / (precision + recall),
    }


def _feature_stats(
    grids: np.ndarray, features: tuple[str, ...], threshold: float
) -> dict[str, float]:
    onsets = grids[:, 0] > threshold
    ts = grids[:, features.index("timeshift")][onsets]
    return {
        "onset_density": float(onsets.sum(axis=(1, 2)).mean()),
        "timeshift_std": float(ts.std()) if ts.size else 0.0,
    }


class GridVaeFamily(VaeFamily):
    name = "grid_vae"
    Config = GridVaeConfig
    code = ("etude/grids.py", "etude/midi.py")
    baselines = (
        "an all-empty grid (F1 0) and the training mean of velocity and timeshift on onset cells"
    )

    def representation(self, config: GridVaeConfig) -> str:
        return config.representation

    def load_data(self, config: GridVaeConfig, path: Path) -> GridSet:
        return GridSet.load(path)

    def example(self, config: GridVaeConfig) -> tuple[str, str]:
        return f"{config.representation} window with grid.min_onsets onsets", "grid.min_onsets"

    def model_meta(self, data: GridSet, config: GridVaeConfig) -> dict:
        """The network's shape, and what decoding a grid into notes needs without the data: the
        geometry, the lanes' kind and the test windows' median grid step."""
        test = data.split_index("test")
        return {
            "shape": list(data.grids.shape[1:]),
            "duration_range": [data.grid.duration_min, data.grid.duration_max],
            "grid": data.grid.model_dump(mode="json"),
            "drum_lanes": bool(data.drum_lanes),
            "unit_s": float(np.median(data.unit[test] if len(test) else data.unit)),
        }

    def build(self, config: GridVaeConfig, meta: dict) -> GridVAE:
        return GridVAE(config, tuple(meta["shape"]), tuple(meta["duration_range"]))

    def batch(self, data: GridSet, index: np.ndarray, device: torch.device) -> Batch:
        return (torch.from_numpy(data.grids[index]).to(device),)

    def reconstruction(
        self, model: GridVAE, x: torch.Tensor, output: torch.Tensor, config: GridVaeConfig
    ) -> dict[str, torch.Tensor]:
        """Onset BCE on the logits, and each other feature's squared error, summed over cells."""
        out = model.activate(output)
        onset = x[:, 0]
        # The unmasked original pulls empty cells' velocity and timeshift to 0; masked, only onset
        # cells count, so timeshift keeps its spread.
        mask = onset if config.mask_to_onsets else torch.ones_like(onset)
        sum_cells = lambda t: t.flatten(1).sum(1)
        terms = {
            "onset": sum_cells(
                F.binary_cross_entropy_with_logits(output[:, 0], onset, reduction="none")
            )
        }
        for f, name in enumerate(model.features[1:], start=1):
            terms[name] = sum_cells(mask * (out[:, f] - x[:, f]) ** 2)
        return terms

    def loss_weights(
        self, model: GridVAE, config: GridVaeConfig, epoch: int | None
    ) -> dict[str, float]:
        return loss_weights(config, model.features, epoch)

    def epoch_measures(
        self, model: GridVAE, data: GridSet, config: GridVaeConfig, epoch: int, device: torch.device
    ) -> dict[str, float]:
        """Per epoch, on the validation split: loss weights, KL per dimension, active units, onset
        F1 and the variance of decoded timeshift on onset cells (feature collapse below the
        threshold)."""
        x, out, mu, logvar = encode_decode(
            model,
            self.eval_batches(data, config, "validation", config.val_max_windows, device),
            model.activate,
        )
        onsets = x[:, 0] > 0.5
        ts = out[:, model.features.index("timeshift")][onsets]
        ts_true = x[:, model.features.index("timeshift")][onsets]
        row = {f"weight_{k}": v for k, v in loss_weights(config, model.features, epoch).items()}
        row["timeshift_variance"] = float(ts.var()) if ts.size else 0.0
        row["timeshift_std_ratio"] = (
            float(ts.std() / ts_true.std()) if ts.size and ts_true.std() > 0 else 0.0
        )
        row |= {
            f"val_{k}": v for k, v in latent_stats(mu, logvar, config.active_unit_threshold).items()
        }
        row["val_onset_f1"] = _onset_scores(onsets, out[:, 0] > config.onset_threshold)["onset_f1"]
        row |= _prior_probe(model, onsets, config, epoch, device)
        annealed = epoch >= config.kl.start_epoch + config.kl.anneal_epochs
        if annealed and row["timeshift_variance"] < config.collapse_variance:
            collapse_warning(
                epoch,
                f"decoded timeshift variance {row['timeshift_variance']:.4f} < "
                f"{config.collapse_variance}: timeshift feature collapse",
            )
        return row

    @torch.no_grad()
    def evaluate(
        self,
        model: GridVAE,
        data: GridSet,
        config: GridVaeConfig,
        settings: Evaluate,
        device: torch.device,
    ) -> dict[str, dict[str, float]]:
        x, out, mu, logvar = encode_decode(
            model,
            self.eval_batches(data, config, "test", settings.max_windows, device),
            model.activate,
        )
        features = model.features
        onsets = x[:, 0] > 0.5
        ts_true = x[:, features.index("timeshift")][onsets]
        ts_pred = out[:, features.index("timeshift")][onsets]
        train = data.grids[data.split_index("train")]
        train_onsets = train[:, 0] > 0.5
        metrics = _onset_scores(onsets, out[:, 0] > config.onset_threshold)
        metrics |= {
            "velocity_mae": float(np.abs(out[:, 1][onsets] - x[:, 1][onsets]).mean()),
            "timeshift_mae": float(np.abs(ts_pred - ts_true).mean()),
            "timeshift_std_ratio": float(ts_pred.std() / max(ts_true.std(), 1e-12)),
        }
        metrics |= latent_stats(mu, logvar, config.active_unit_threshold)

        generator = torch.Generator().manual_seed(config.seed)
        z = torch.randn(settings.prior_samples, config.latent_dim, generator=generator).to(device)
        prior = model.activate(model.decode_raw(z)).cpu().numpy()
        return {
            "model": metrics,
            # An all-empty grid (F1 0) and the training mean of velocity and timeshift on onset
            # cells.
            "baseline": {
                "onset_precision": 0.0,
                "onset_recall": 0.0,
                "onset_f1": 0.0,
                "velocity_mae": float(
                    np.abs(train[:, 1][train_onsets].mean() - x[:, 1][onsets]).mean()
                ),
                "timeshift_mae": float(np.abs(train[:, -1][train_onsets].mean() - ts_true).mean()),
            },
            "prior_samples": _feature_stats(prior, features, config.onset_threshold),
            "test_data": _feature_stats(x, features, 0.5),
            "windows": {"count": float(len(x))},
        }

    @torch.no_grad()
    def generate(
        self,
        model: GridVAE,
        data: GridSet,
        config: GridVaeConfig,
        settings: Generate,
        out_dir: Path,
        device: torch.device,
    ) -> tuple[pd.DataFrame, dict[str, float]]:
        """Prior samples, the XY-pad sweep (latent_dim 2), interpolations between test windows; each
        group written as one MIDI file, windows back to back."""
        grid = data.grid
        model.eval()
        generator = torch.Generator().manual_seed(config.seed)
        groups: dict[str, torch.Tensor] = {
            "prior": torch.randn(settings.num_samples, config.latent_dim, generator=generator)
        }
        if config.latent_dim == 2:
            axis = torch.linspace(-settings.sweep_range, settings.sweep_range, settings.sweep_steps)
            groups["sweep"] = torch.cartesian_prod(axis, axis)
        test = data.split_index("test")
        pairs = test[
            np.linspace(0, len(test) - 1, 2 * settings.interpolations).round().astype(np.int64)
        ]
        if settings.interpolations:
            mu, _ = model.encode(torch.from_numpy(data.grids[pairs]).to(device))
            mu = mu.cpu()
            steps = torch.linspace(0, 1, settings.interpolation_steps)[:, None]
            for k in range(settings.interpolations):
                groups[f"interp{k}"] = (1 - steps) * mu[2 * k] + steps * mu[2 * k + 1]

        # Samples are written back to back on the median grid step of the test windows.
        unit = float(np.median(data.unit[test]))
        window_s = grid.bars * grid.beats_per_bar * grid.steps_per_beat * unit
        out_dir.mkdir(parents=True, exist_ok=True)
        frames, decoded = [], {}
        for name, z in groups.items():
            windows = model.activate(model.decode_raw(z.to(device))).cpu().numpy()
            decoded[name] = windows
            for i, window in enumerate(windows):
                notes = decode(
                    window,
                    i * window_s,
                    unit,
                    grid,
                    config.representation,
                    onset_threshold=config.onset_threshold,
                    grid_offset=settings.grid_offset,
                    drum_lanes=data.drum_lanes,
                )
                frames.append(notes.assign(group=name, sample=i))
        table = pd.concat(frames, ignore_index=True)
        for name, notes in table.groupby("group"):
            # Micro-timing can put the first onset before 0 s: shift the group to start at 0.
            shifted = notes.assign(
                start=notes["start"] - notes["start"].min(), end=notes["end"] - notes["start"].min()
            )
            write_notes(shifted, out_dir / f"{name}.mid", settings.program, is_drum=data.drum_lanes)
        # Test windows decoded from their true grids, laid out like the prior's, to listen to beside
        # them.
        windows = _data_excerpts(data, config, "test", settings.num_samples)
        lengths = [w.attrs["beat_s"] * grid.bars * grid.beats_per_bar for w in windows]
        offsets = np.cumsum([0.0, *lengths[:-1]])
        test_notes = pd.concat(
            [w.assign(start=w["start"] + t, end=w["end"] + t) for w, t in zip(windows, offsets)]
        )
        write_notes(test_notes, out_dir / "test.mid", settings.program, is_drum=data.drum_lanes)
        np.savez(out_dir / "grids.npz", **decoded)
        latent = _latent_map(model, self.eval_batches(data, config, "test", None, device))
        latent.to_parquet(out_dir / "latent.parquet", index=False)
        stats = {
            f"{name}_{k}": v
            for name, w in decoded.items()
            for k, v in _feature_stats(w, model.features, config.onset_threshold).items()
        }
        return table, stats

    # ---- serving: grids decoded from latent points ----------------------------------------------
    request_fields: ClassVar[dict[str, tuple[str, bool]]] = {
        "z": ("matrix", True),
        "bpm": ("double", False),
        "onset_threshold": ("double", False),
    }

    def request_example(self, config: GridVaeConfig, meta: dict[str, Any]) -> dict[str, Any]:
        """Two points of the latent plane, played one after the other."""
        return {"z": [[0.0] * config.latent_dim, [1.0] + [0.0] * (config.latent_dim - 1)]}

    def respond(
        self,
        model: GridVAE,
        config: GridVaeConfig,
        meta: dict[str, Any],
        request: dict[str, Any],
        settings: Generate,
    ) -> dict[str, Any]:
        """The grids decoded from latent points `z` ((k, latent_dim), played back to back), their
        notes and MIDI file; `bpm` sets the tempo (else the test windows' median) and
        `onset_threshold` the decoding threshold (else the variant's)."""
        if "z" not in request:
            raise DataError(f"request: 'z' is missing (keys: {sorted(request)})")
        points = np.atleast_2d(np.asarray(request["z"], dtype=np.float32))
        if (
            points.ndim != 2
            or points.shape[1] != config.latent_dim
            or not np.isfinite(points).all()
        ):
            raise DataError(
                f"request z: expected finite points of {config.latent_dim} numbers, got shape "
                f"{points.shape}"
            )
        grid = Grid.model_validate(meta["grid"])
        unit = (
            60.0 / (float(request["bpm"]) * grid.steps_per_beat)
            if "bpm" in request
            else meta["unit_s"]
        )
        threshold = float(request.get("onset_threshold", config.onset_threshold))
        model.eval()
        with torch.inference_mode():
            windows = model.activate(model.decode_raw(torch.from_numpy(points))).numpy()
        window_s = grid.bars * grid.beats_per_bar * grid.steps_per_beat * unit
        notes = pd.concat(
            [
                decode(
                    window,
                    i * window_s,
                    unit,
                    grid,
                    config.representation,
                    onset_threshold=threshold,
                    grid_offset=settings.grid_offset,
                    drum_lanes=meta["drum_lanes"],
                )
                for i, window in enumerate(windows)
            ],
            ignore_index=True,
        )
        return {
            "notes": notes[["pitch", "velocity", "start", "end"]].to_dict("records"),
            "grids": windows.tolist(),
            "midi": midi_bytes(notes, settings.program, is_drum=meta["drum_lanes"]),
        }

    # Remedies of the grid VAEs' pathologies (the MelodyVAE fixes), by the names diagnosis.ladders
    champion_metrics: ClassVar[tuple[tuple[str, str], ...]] = (
        ("test.onset_f1", "higher"),
        ("music.prior.oa_mean", "higher"),
    )
    headline_metrics: ClassVar[dict[str, str]] = {
        "onset_f1": "higher",
        "velocity_mae": "lower",
        "timeshift_mae": "lower",
    }

    # uses; the onset threshold moves to the one at which prior samples held the data's density.
    remedies: ClassVar[dict[str, Remedy]] = VaeFamily.remedies | {
        "timeshift_weight": Remedy(
            "a larger timeshift weight",
            lambda c, r, v: {
                "loss.timeshift": raised(c.loss.timeshift, r.timeshift_factor, r.timeshift_min)
            },
        ),
        "onset_mask": Remedy(
            "timeshift errors on onset cells only", lambda c, r, v: {"mask_to_onsets": True}
        ),
        "density_threshold": Remedy(
            "a decoding threshold that matches the data's density",
            lambda c, r, v: {"onset_threshold": round(min(r.onset_threshold_max, v), 3)},
        ),
    }

    def verdicts(self, history: pd.DataFrame, judge: Judge) -> list[Verdict]:
        """After KL annealing: posterior collapse, timeshift collapse (decoded spread or variance),
        prior samples alike (mode collapse) or of another density than the data."""
        config, settings = judge.config, judge.settings
        h = history[history["epoch"] >= config.kl.start_epoch + config.kl.anneal_epochs].dropna(
            subset=["val_loss"]
        )
        if not len(h):
            return []
        last = h.iloc[-1]
        kl_dims = last[[c for c in h.columns if c.startswith("val_kl_dim_")]]
        verdicts = [
            judge(
                "posterior_collapse",
                bool(last["val_active_units"] == 0 or (kl_dims < settings.kl_floor).all()),
                f"{last['val_active_units']:.0f}/{config.latent_dim} active units, KL per "
                f"dimension at most {kl_dims.max():.3g} nats (floor {settings.kl_floor:g})",
                float(kl_dims.max()),
                settings.kl_floor,
                "higher",
            )
        ]
        timeshift = collapse_verdict(
            "timeshift_collapse",
            h,
            "timeshift_std_ratio",
            settings.collapse_std_ratio,
            judge,
            "decoded timeshift spread on onset cells (validation) is",
        )
        if not fired(timeshift) and last["timeshift_variance"] < config.collapse_variance:
            timeshift = [
                judge(
                    "timeshift_collapse",
                    True,
                    f"decoded timeshift variance {last['timeshift_variance']:.4f} "
                    f"< {config.collapse_variance:g} after KL annealing",
                    float(last["timeshift_variance"]),
                    config.collapse_variance,
                    "higher",
                )
            ]
        verdicts += timeshift
        verdicts += collapse_verdict(
            "mode_collapse",
            h,
            "prior_diversity_ratio",
            settings.diversity_ratio,
            judge,
            "prior samples differ from each other (onset Hamming distance)",
        )
        density = recent(h, "prior_density_ratio", settings)
        # Measured as the excess either way (x or /), so one limit serves both sides.
        excess = max(density, 1 / density) if density > 0 else np.inf
        verdicts.append(
            judge(
                "prior_density",
                bool(excess > settings.density_ratio),
                f"prior samples hold {density:.2f}x the onsets of validation windows at "
                f"onset_threshold {config.onset_threshold:g} (median of the last epochs)",
                float(min(excess, np.finfo(np.float32).max)),
                settings.density_ratio,
                "lower",
                # The remedy decodes at the threshold that matched the data's density.
                remedy_value=recent(h, "prior_matching_threshold", settings),
            )
        )
        return verdicts

    def judge_samples(
        self, data: GridSet, config: GridVaeConfig, settings: Generate, samples: pd.DataFrame
    ) -> dict:
        """Each group's decoded windows against test (and, for the ceiling, training) windows
        decoded from their true grids, each on its own beat: the sample's at the median test
        step."""
        from etude import music

        grid = data.grid
        steps = grid.bars * grid.beats_per_bar * grid.steps_per_beat
        unit = float(np.median(data.unit[data.split_index("test")]))
        groups = {}
        for group, frame in samples.groupby("group", sort=False):
            groups[group] = [
                _excerpt(notes, i * steps * unit, unit * grid.steps_per_beat)
                for i, notes in frame.groupby("sample")
            ]
        test, train = (
            _data_excerpts(data, config, split, settings.reference_excerpts)
            for split in ("test", "train")
        )
        return music.judge(groups, test, train, unit * grid.steps_per_beat, grid.steps_per_beat)

    def report_sections(self, result: Results, config: GridVaeConfig, settings) -> list[Section]:
        from etude.figures import latent_figure, piano_roll_figure

        latent = pd.read_parquet(result.samples_dir / "latent.parquet")
        return [
            Section(
                piano_roll_figure(result, settings.piano_roll_seconds, first_sample_only=False)
            ),
            Section(latent_figure(result.name, latent)),
        ]


@torch.no_grad()
def _prior_probe(
    model: GridVAE, data_onsets: np.ndarray, config: GridVaeConfig, epoch: int, device: torch.device
) -> dict[str, float]:
    """`diagnostic_samples` prior samples (seeded by epoch) against validation windows: onset
    density ratio, and how much they differ from each other (mean pairwise Hamming distance of onset
    grids) relative to the data's: near 0, every z decodes the same pattern."""
    model.eval()
    generator = torch.Generator().manual_seed(config.seed + epoch)
    z = torch.randn(config.diagnostic_samples, config.latent_dim, generator=generator).to(device)
    chances = model.activate(model.decode_raw(z))[:, 0].cpu().numpy()
    prior = chances > config.onset_threshold
    data = data_onsets[
        np.linspace(0, len(data_onsets) - 1, config.diagnostic_samples).round().astype(np.int64)
    ]
    data_spread = _mean_hamming(data)
    # The threshold at which these prior samples hold as many onsets as the data's: the k-th
    # largest onset probability, k the data's onset count.
    ranked = np.sort(chances, axis=None)[::-1]
    count = int(min(max(data.sum(), 1), ranked.size))
    return {
        "prior_density_ratio": float(prior.sum() / max(data.sum(), 1)),
        "prior_matching_threshold": float(ranked[count - 1]),
        "prior_diversity_ratio": _mean_hamming(prior) / data_spread if data_spread else 0.0,
    }


def _mean_hamming(onsets: np.ndarray) -> float:
    flat = onsets.reshape(len(onsets), -1).astype(np.float32)
    distance = flat.sum(1)[:, None] + flat.sum(1)[None, :] - 2 * flat @ flat.T
    return float(distance.sum() / (len(flat) * (len(flat) - 1)))


def _excerpt(notes: pd.DataFrame, origin: float, beat_s: float) -> pd.DataFrame:
    """A decoded window as music.py reads it: beat 0 at the window's first grid line."""
    notes = notes.copy()
    notes.attrs.update(origin=origin, beat_s=beat_s)
    return notes


def _data_excerpts(
    data: GridSet, config: GridVaeConfig, split: str, limit: int
) -> list[pd.DataFrame]:
    """Up to `limit` windows of a split, evenly spaced, decoded from their true grids on their own
    beat."""
    grid = data.grid
    return [
        _excerpt(
            decode(
                data.grids[w],
                0.0,
                float(data.unit[w]),
                grid,
                config.representation,
                drum_lanes=data.drum_lanes,
            ),
            0.0,
            float(data.unit[w]) * grid.steps_per_beat,
        )
        for w in evenly_spaced(data.split_index(split), limit)
    ]


def _latent_map(model: GridVAE, test_batches: Iterator[Batch]) -> pd.DataFrame:
    """Test windows' mu (first two dimensions) and onset density: the report's latent plane."""
    x, _, mu, _ = encode_decode(model, test_batches, model.activate)
    second = mu[:, 1] if mu.shape[1] > 1 else np.zeros(len(mu))
    return pd.DataFrame(
        {"z0": mu[:, 0], "z1": second, "onset_density": (x[:, 0] > 0.5).sum(axis=(1, 2))}
    )


FAMILY = GridVaeFamily()
