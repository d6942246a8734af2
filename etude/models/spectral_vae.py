"""Spectral VAE: a convolutional VAE over log-mel segments (the PyTorch "MusicVAE" of the
documents).

Encoder: stride-2 blocks Conv2d -> BatchNorm -> GELU (-> Dropout2d), one per entry of `channels`,
then linear mu and log sigma^2. Decoder: linear -> the encoder's last feature map -> mirrored
stride-2 transposed convolutions -> a linear 1-channel output, cropped to the input size, so any
segment length works.

Loss = recon + beta * KL + spectral_weight * spectral + output_reg_weight * range, with the fixes of
the documents as parameters: frequency-weighted reconstruction, an FFT-magnitude term against
missing high frequencies, and a penalty on outputs outside the input's range.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import librosa
import numpy as np
import pandas as pd
import soundfile
import torch
import torch.nn.functional as F
from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)
from torch import nn

from etude.diagnosis import Judge, Remedy, Verdict, raised, recent, scaled
from etude.errors import DataError
from etude.family import Results, Section
from etude.mel import MelSet, denormalised
from etude.models import vae
from etude.models.spectral_metrics import (
    SpectrogramMetrics,
    featureless_share,
    spectrogram_metrics,
    time_variation_db,
    to_db,
)
from etude.models.vae import Batch, VaeConfig, VaeFamily, collapse_warning
from etude.params import Evaluate, Generate, Strict


class FrequencyBand(Strict):
    start: Annotated[float, Field(ge=0, le=1)]  # fraction of the mel bins
    end: Annotated[float, Field(ge=0, le=1)]
    weight: NonNegativeFloat


class SpectralVaeConfig(VaeConfig):
    channels: Annotated[list[PositiveInt], Field(min_length=1)]  # one stride-2 conv block each
    kernel_size: Annotated[int, Field(ge=1)]
    recon_bands: list[FrequencyBand]  # frequency weighting; bins outside every band weigh 1
    spectral_weight: NonNegativeFloat  # MSE of |FFT2| of input and reconstruction
    output_reg_weight: (
        NonNegativeFloat  # outputs outside the input's range, widened by range_margin
    )
    range_margin: NonNegativeFloat  # x R, R the input's range
    val_split: (
        Annotated[float, Field(gt=0, lt=1)] | None
    )  # held-out share of training segments; null: validation split
    featureless_std_db: (
        PositiveFloat  # spectrogram whose dB std over time is below this: featureless
    )
    featureless_warning_share: Annotated[
        float, Field(ge=0, le=1)
    ]  # more featureless reconstructions: warn
    flat_prior_ratio: Annotated[
        float, Field(gt=0, le=1)
    ]  # prior samples' change over time below this x data's: flat
    hf_fraction: Annotated[
        float, Field(gt=0, lt=1)
    ]  # top share of bins: the high-frequency energy ratio
    griffin_lim_iters: PositiveInt

    @model_validator(mode="after")
    def _bands(self) -> SpectralVaeConfig:
        for band in self.recon_bands:
            if band.start >= band.end:
                raise ValueError(f"recon_bands: start {band.start} must be below end {band.end}")
        return self


class SpectralVAE(nn.Module):
    def __init__(self, config: SpectralVaeConfig, shape: tuple[int, int]):
        super().__init__()
        k, pad = config.kernel_size, config.kernel_size // 2
        self.shape = shape
        blocks, c_in, h, w = [], 1, *shape
        for c in config.channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c, k, stride=2, padding=pad),
                    nn.BatchNorm2d(c, momentum=config.batchnorm_momentum),
                    nn.GELU(),
                    nn.Dropout2d(config.dropout),
                )
            )
            c_in, h, w = c, (h + 2 * pad - k) // 2 + 1, (w + 2 * pad - k) // 2 + 1
        self.encoder = nn.Sequential(*blocks)
        self.encoded = (c_in, h, w)
        flat = c_in * h * w
        self.mu = nn.Linear(flat, config.latent_dim)
        self.logvar = nn.Linear(flat, config.latent_dim)
        self.expand = nn.Linear(config.latent_dim, flat)
        ups = []
        reversed_channels = config.channels[::-1]
        for c_from, c_to in itertools.pairwise(reversed_channels):
            ups.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c_from, c_to, k, stride=2, padding=pad, output_padding=1),
                    nn.BatchNorm2d(c_to, momentum=config.batchnorm_momentum),
                    nn.GELU(),
                )
            )
        # Linear output: normalised log-mels are unbounded on both sides.
        ups.append(
            nn.ConvTranspose2d(config.channels[0], 1, k, stride=2, padding=pad, output_padding=1)
        )
        self.decoder = nn.Sequential(*ups)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.expand(z).view(len(z), *self.encoded))
        rows, cols = self.shape
        out = out[..., :rows, :cols]
        return F.pad(out, (0, cols - out.shape[-1], 0, rows - out.shape[-2]))

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode(z), mu, logvar


@dataclass
class SpectralData:
    mel: MelSet
    train: np.ndarray  # segment indices
    validation: np.ndarray
    test: np.ndarray

    def split_index(self, split: str) -> np.ndarray:
        return {"train": self.train, "validation": self.validation, "test": self.test}[split]

    def empty_error(self, variant: str) -> str:
        """Always "": the mel stage fails rather than write a set without a segment."""
        return ""


def split_segments(mel: MelSet, config: SpectralVaeConfig) -> SpectralData:
    train = mel.split_index("train")
    if config.val_split is None:
        validation = mel.split_index("validation")
    else:  # the reference recipe: a seeded share of the training segments
        held = np.random.default_rng(config.seed).permutation(len(train))[
            : int(round(config.val_split * len(train)))
        ]
        validation, train = np.sort(train[held]), np.delete(train, held)
    return SpectralData(mel, train, validation, mel.split_index("test"))


def frequency_weights(config: SpectralVaeConfig, n_bins: int) -> torch.Tensor:
    """Per-bin weights: band [start, end) covers bins int(start * n) .. int(end * n), as the
    reference (bins 0-25 x1.5, 38-89 x2.0, 102-128 x0.8 of 128); other bins weigh 1."""
    w = torch.ones(n_bins)
    for band in config.recon_bands:
        w[int(band.start * n_bins) : int(band.end * n_bins)] = band.weight
    return w


def loss_terms(
    x: torch.Tensor, out: torch.Tensor, weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-segment terms (B,), each a sum over the segment's bins and frames.

    Normalisation: recon is sum_{f,t} w_f (x_hat - x)^2 / mean_f(w_f), the squared error of the
    whole segment with the weights only redistributing emphasis between bands. On this scale the
    loss is a Gaussian log-likelihood (up to 1/2) and beta = 1 is the ELBO, so beta 0.05 is a weak
    prior pressure, as the documents intend. The reference divided by sum_f w_f over the batch,
    which left recon ~B*T times a per-element mean and beta at an arbitrary, tiny effective weight.
    spectral: squared difference of |FFT2| (full spectrum, orthonormal: by Parseval on recon's
    scale). range: distance of each output value outside [min - m R, max + m R] of its input
    segment."""
    w = (weights / weights.mean()).to(x.device)[:, None]
    recon = (w * (out - x) ** 2).flatten(1).sum(1)
    magnitude = lambda t: torch.fft.fft2(t, norm="ortho").abs()
    spectral = (magnitude(out) - magnitude(x)).pow(2).flatten(1).sum(1)
    return {"recon": recon, "spectral": spectral}


def range_penalty(x: torch.Tensor, out: torch.Tensor, margin: float) -> torch.Tensor:
    lo, hi = x.flatten(1).amin(1), x.flatten(1).amax(1)
    reach = margin * (hi - lo)
    lo, hi = (lo - reach)[:, None, None, None], (hi + reach)[:, None, None, None]
    return (F.relu(lo - out) + F.relu(out - hi)).flatten(1).sum(1)


def loss_weights(config: SpectralVaeConfig, epoch: int | None) -> dict[str, float]:
    return {
        "recon": 1.0,
        "kl": vae.kl_weight(config.kl, epoch),
        "spectral": config.spectral_weight,
        "range": config.output_reg_weight,
    }


def _latent(mu: np.ndarray, logvar: np.ndarray, config: SpectralVaeConfig) -> dict[str, float]:
    """KL and active units; per-dimension KL stays out (128 columns would drown the history)."""
    stats = vae.latent_stats(mu, logvar, config.active_unit_threshold)
    return {"kl": stats["kl"], "active_units": stats["active_units"]}


@torch.no_grad()
def _prior(
    model: SpectralVAE, config: SpectralVaeConfig, count: int, device: torch.device
) -> np.ndarray:
    generator = torch.Generator().manual_seed(config.seed)
    z = torch.randn(count, config.latent_dim, generator=generator)
    outs = [model.decode(chunk.to(device))[:, 0].cpu() for chunk in z.split(config.val_batch_size)]
    return torch.cat(outs).numpy()


def spectrogram_image(groups: dict[str, np.ndarray], floor_db: float, path: Path) -> None:
    """One row per group (inputs, their reconstructions, prior samples), dB below the segment
    max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(len(v) for v in groups.values())
    fig, axes = plt.subplots(
        len(groups), count, figsize=(2.6 * count, 2.0 * len(groups)), squeeze=False
    )
    for row, (group, spectrograms) in zip(axes, groups.items()):
        for i, ax in enumerate(row):
            ax.axis("off")
            if i < len(spectrograms):
                ax.imshow(
                    spectrograms[i],
                    origin="lower",
                    aspect="auto",
                    cmap="magma",
                    vmin=floor_db,
                    vmax=0,
                )
                ax.set_title(f"{group} {i}", fontsize=8)
    fig.suptitle("log-mel spectrograms (dB below each segment's maximum)", fontsize=10, y=1.02)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def to_audio(db: np.ndarray, g: dict[str, Any], config: SpectralVaeConfig) -> np.ndarray:
    """Griffin-Lim from a dB mel spectrogram of geometry `g` (MelSet.geometry), peak-normalised
    (levels are relative to the segment max)."""
    power = 10 ** (np.maximum(db, -g["top_db"]) / 10)
    stft = librosa.feature.inverse.mel_to_stft(
        power,
        sr=g["sample_rate"],
        n_fft=g["n_fft"],
        power=2.0,
        fmin=g["fmin"],
        fmax=g["fmax"],
        htk=True,
        norm="slaney",
    )
    audio = librosa.griffinlim(
        stft,
        n_iter=config.griffin_lim_iters,
        hop_length=g["hop_length"],
        n_fft=g["n_fft"],
        pad_mode="reflect",
        random_state=config.seed,
    )
    return librosa.util.normalize(audio)


class SpectralVaeFamily(VaeFamily):
    name = "spectral_vae"
    Config = SpectralVaeConfig
    code = ("etude/models/spectral_metrics.py", "etude/mel.py", "etude/audio.py")
    baselines = "the per-bin mean spectrum of the training split"

    def representation(self, config: SpectralVaeConfig) -> str:
        return "mel"

    def load_data(self, config: SpectralVaeConfig, path: Path) -> SpectralData:
        return split_segments(MelSet(path), config)

    def example(self, config: SpectralVaeConfig) -> tuple[str, str]:
        return "non-silent mel segment", "mel.segment_s"

    def model_meta(self, data: SpectralData, config: SpectralVaeConfig) -> dict:
        mel = data.mel
        return {
            "shape": list(mel.shape),
            "geometry": mel.geometry,
            "normalisation": {"mean": mel.mean.tolist(), "std": mel.std.tolist()},
        }

    # ---- serving: spectrograms and audio decoded from latent points ----------------------------
    request_fields: ClassVar[dict[str, tuple[str, bool]]] = {
        "z": ("matrix", False),
        "seed": ("long", False),
    }

    def request_example(self, config: SpectralVaeConfig, meta: dict[str, Any]) -> dict[str, Any]:
        """One prior sample."""
        return {"seed": config.seed}

    def respond(
        self,
        model: SpectralVAE,
        config: SpectralVaeConfig,
        meta: dict[str, Any],
        request: dict[str, Any],
        settings: Generate,
    ) -> dict[str, Any]:
        """The spectrogram (dB) decoded from latent point `z`, or from a prior sample drawn from
        `seed`, and its Griffin-Lim audio as a WAV file."""
        if request.get("z") is not None:
            z = np.atleast_2d(np.asarray(request["z"], dtype=np.float32))[:1]
            if z.shape[1] != config.latent_dim or not np.isfinite(z).all():
                raise DataError(
                    f"request z: expected a point of {config.latent_dim} finite numbers"
                )
            z = torch.from_numpy(z)
        elif request.get("seed") is not None:
            generator = torch.Generator().manual_seed(int(request["seed"]))
            z = torch.randn(1, config.latent_dim, generator=generator)
        else:
            raise DataError(f"request: 'z' or 'seed' is needed (keys: {sorted(request)})")
        model.eval()
        with torch.inference_mode():
            out = model.decode(z)[0, 0].numpy()
        g, stats = meta["geometry"], meta["normalisation"]
        mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
        db = np.maximum(denormalised(out, mean, std), -g["top_db"])
        wav = io.BytesIO()
        soundfile.write(
            wav, to_audio(db, g, config), int(g["sample_rate"]), subtype="PCM_16", format="WAV"
        )
        return {"spectrogram_db": db.astype(np.float32).tolist(), "wav": wav.getvalue()}

    def build(self, config: SpectralVaeConfig, meta: dict) -> SpectralVAE:
        return SpectralVAE(config, tuple(meta["shape"]))

    def batch(self, data: SpectralData, index: np.ndarray, device: torch.device) -> Batch:
        """Normalised log-mel segments (B, 1, n_mels, frames)."""
        return (torch.from_numpy(data.mel.normalised(index)[:, None]).to(device),)

    def reconstruction(
        self, model: SpectralVAE, x: torch.Tensor, output: torch.Tensor, config: SpectralVaeConfig
    ) -> dict[str, torch.Tensor]:
        terms = loss_terms(x, output, frequency_weights(config, x.shape[-2]))
        terms["range"] = range_penalty(x, output, config.range_margin)
        return terms

    def loss_weights(
        self, model: SpectralVAE, config: SpectralVaeConfig, epoch: int | None
    ) -> dict[str, float]:
        return loss_weights(config, epoch)

    def epoch_measures(
        self,
        model: SpectralVAE,
        data: SpectralData,
        config: SpectralVaeConfig,
        epoch: int,
        device: torch.device,
    ) -> dict[str, float]:
        """Per epoch, on the validation segments: loss weights, per-value MSE, output range against
        the input's, featureless reconstructions, KL and active units (posterior collapse)."""
        batches = self.eval_batches(data, config, "validation", config.val_max_windows, device)
        x, out, mu, logvar = vae.encode_decode(model, batches, lambda out: out[:, 0])
        x = x[:, 0]
        row = {f"weight_{k}": v for k, v in loss_weights(config, epoch).items()}
        row |= {
            "val_mse": float(((out - x) ** 2).mean()),
            "val_output_min": float(out.min()),
            "val_output_max": float(out.max()),
            "val_input_min": float(x.min()),
            "val_input_max": float(x.max()),
            "val_featureless_share": featureless_share(to_db(data.mel, out), config),
        }
        quality = spectrogram_metrics(x, out, data.mel, config)
        row |= {
            "val_hf_energy_ratio": quality["hf_energy_ratio"],
            "val_out_of_range_share": quality["out_of_range_share"],
        }
        row |= {f"val_{k}": v for k, v in _latent(mu, logvar, config).items()}
        if (
            row["val_featureless_share"] > config.featureless_warning_share
            or row["val_active_units"] == 0
        ):
            collapse_warning(
                epoch,
                f"{row['val_featureless_share']:.0%} featureless reconstructions, "
                f"{row['val_active_units']:.0f} active units: collapse",
            )
        prior = time_variation_db(
            to_db(data.mel, _prior(model, config, config.diagnostic_samples, device))
        ).mean()
        row["prior_time_variation_ratio"] = float(
            prior / time_variation_db(data.mel.denormalise(x)).mean()
        )
        return row

    @torch.no_grad()
    def evaluate(
        self,
        model: SpectralVAE,
        data: SpectralData,
        config: SpectralVaeConfig,
        settings: Evaluate,
        device: torch.device,
    ) -> dict[str, dict[str, float]]:
        mel = data.mel
        model.eval()
        scores, baseline = SpectrogramMetrics(mel, config), SpectrogramMetrics(mel, config)
        mus, logvars, test_variation = [], [], []
        for (x,) in self.eval_batches(data, config, "test", settings.max_windows, device):
            out, mu, logvar = model(x)
            x, out = x[:, 0].cpu().numpy(), out[:, 0].cpu().numpy()
            scores.add(x, out)
            # The per-bin mean of the training split: 0 in normalised units, every frame the average
            # spectrum.
            baseline.add(x, np.zeros_like(x))
            mus.append(mu.cpu().numpy()), logvars.append(logvar.cpu().numpy())
            test_variation.append(time_variation_db(mel.denormalise(x)))
        prior_db = to_db(mel, _prior(model, config, settings.prior_samples, device))
        return {
            "model": scores.result()
            | _latent(np.concatenate(mus), np.concatenate(logvars), config),
            "baseline": baseline.result(),
            "prior_samples": {
                "featureless_share": featureless_share(prior_db, config),
                "time_variation_db": float(time_variation_db(prior_db).mean()),
            },
            "test_data": {"time_variation_db": float(np.concatenate(test_variation).mean())},
            "windows": {"count": float(len(np.concatenate(test_variation)))},
        }

    @torch.no_grad()
    def generate(
        self,
        model: SpectralVAE,
        data: SpectralData,
        config: SpectralVaeConfig,
        settings: Generate,
        out_dir: Path,
        device: torch.device,
    ) -> tuple[pd.DataFrame, dict[str, float]]:
        """Test segments with their reconstructions, and prior samples: as dB spectrograms
        (spectrograms.npz, for the report's images) and as Griffin-Lim audio (wav)."""
        mel = data.mel
        test = data.test
        picked = test[
            np.linspace(0, len(test) - 1, settings.audio_examples).round().astype(np.int64)
        ]
        x, out, _, _ = vae.encode_decode(
            model, [self.batch(data, picked, device)], lambda out: out[:, 0]
        )
        x = x[:, 0]
        groups = {
            "input": mel.denormalise(x),
            "reconstruction": to_db(mel, out),
            "prior": to_db(mel, _prior(model, config, settings.audio_examples, device)),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out_dir / "spectrograms.npz", **{k: v.astype(np.float32) for k, v in groups.items()}
        )
        spectrogram_image(groups, -mel.geometry["top_db"], out_dir / "spectrograms.png")
        rows = []
        for group, spectrograms in groups.items():
            for i, db in enumerate(spectrograms):
                name = f"{group}_{i}.wav"
                soundfile.write(
                    out_dir / name,
                    to_audio(db, mel.geometry, config),
                    int(mel.geometry["sample_rate"]),
                    subtype="PCM_16",
                )
                rows.append(
                    {
                        "group": group,
                        "sample": i,
                        "file": name,
                        "segment": int(picked[i]) if group != "prior" else -1,
                        "time_variation_db": float(time_variation_db(db[None])[0]),
                    }
                )
        sources = mel.pieces.groupby("audio")["seconds"].sum().to_dict()
        (out_dir / "audio_sources.json").write_text(json.dumps(sources, indent=2) + "\n")
        stats = {f"{g}_featureless_share": featureless_share(v, config) for g, v in groups.items()}
        stats |= {
            f"{g}_time_variation_db": float(time_variation_db(v).mean()) for g, v in groups.items()
        }
        return pd.DataFrame(rows), stats

    champion_metrics: ClassVar[tuple[tuple[str, str], ...]] = (("test.mse", "lower"),)
    headline_metrics: ClassVar[dict[str, str]] = {
        "mse": "lower",
        "rmse_db": "lower",
        "spectral_convergence": "lower",
        "log_spectral_distance_db": "lower",
    }

    # Remedies of the documents' spectral failures, by the names diagnosis.ladders uses.
    remedies: ClassVar[dict[str, Remedy]] = VaeFamily.remedies | {
        "featureless_lr": Remedy(
            "a lower learning rate", lambda c, r, v: {"lr": scaled(c.lr, r.featureless_lr)}
        ),
        "output_range": Remedy(
            "a larger output-range penalty",
            lambda c, r, v: {
                "output_reg_weight": raised(
                    c.output_reg_weight, r.output_reg_factor, r.output_reg_min
                )
            },
        ),
        "spectral_weight": Remedy(
            "a larger spectral loss weight",
            lambda c, r, v: {
                "spectral_weight": raised(c.spectral_weight, r.spectral_factor, r.spectral_min)
            },
        ),
    }

    def verdicts(self, history: pd.DataFrame, judge: Judge) -> list[Verdict]:
        """The documents' three failures (blank reconstructions, outputs beyond the input's range,
        missing high frequencies), posterior collapse, and flat prior samples. Measures that swing
        from epoch to epoch (the high-frequency ratio, the prior's flatness) are judged on their
        median over the last `judge_epochs` epochs, the others at the last epoch."""
        config, settings = judge.config, judge.settings
        h = history.dropna(subset=["val_loss"])
        if not len(h):
            return []
        last, epoch = h.iloc[-1], int(h["epoch"].iloc[-1]) + 1
        blank = float(last["val_featureless_share"])
        verdicts = [
            judge(
                "featureless",
                blank > config.featureless_warning_share,
                f"{blank:.0%} of validation reconstructions are blank "
                f"(dB std < {config.featureless_std_db:g})",
                blank,
                config.featureless_warning_share,
                "lower",
                epoch,
            )
        ]
        span = last["val_input_max"] - last["val_input_min"]
        margin = config.range_margin * span
        overshoot = max(
            last["val_input_min"] - margin - last["val_output_min"],
            last["val_output_max"] - last["val_input_max"] - margin,
        ) / (span or 1.0)
        verdicts.append(
            judge(
                "range_mismatch",
                bool(overshoot > 0),
                f"validation outputs in [{last['val_output_min']:.2f}, "
                f"{last['val_output_max']:.2f}] for inputs in [{last['val_input_min']:.2f}, "
                f"{last['val_input_max']:.2f}]",
                float(overshoot),
                0.0,
                "lower",
                epoch,
            )
        )
        hf = recent(h, "val_hf_energy_ratio", settings)
        verdicts.append(
            judge(
                "missing_high_frequencies",
                hf < settings.hf_energy_ratio,
                f"reconstructions carry {hf:.2f}x the input's energy in the top "
                f"{config.hf_fraction:.0%} of bins (median of the last epochs)",
                hf,
                settings.hf_energy_ratio,
                "higher",
                epoch,
            )
        )
        verdicts.append(
            judge(
                "posterior_collapse",
                bool(last["val_active_units"] == 0),
                f"0/{config.latent_dim} active units (KL {last['val_kl']:.3g} nats)",
                float(last["val_active_units"]),
                0.0,
                "higher",
                epoch,
            )
        )
        flatness = recent(h, "prior_time_variation_ratio", settings)
        verdicts.append(
            judge(
                "flat_prior",
                flatness < config.flat_prior_ratio,
                f"prior samples change over time {flatness:.2f}x as much as validation segments "
                "(median of the last epochs): z ~ N(0, I) decodes off the data",
                flatness,
                config.flat_prior_ratio,
                "higher",
                epoch,
            )
        )
        return verdicts

    def report_sections(
        self, result: Results, config: SpectralVaeConfig, settings
    ) -> list[Section]:
        from etude.figures import audio_players, embedded_png
        from etude.listen import encode_mp3

        hours = json.loads((result.samples_dir / "audio_sources.json").read_text())
        line = "Audio used: " + ", ".join(
            f"{source} ({seconds / 3600:.2f} h)" for source, seconds in hours.items()
        )
        # The clips stay WAV among the samples and become MP3 only in the page, which must stay
        # small.
        clips: dict[str, list[tuple[str, bytes]]] = {}
        for row in result.samples.itertuples():
            wav, rate = soundfile.read(result.samples_dir / row.file, dtype="float32")
            mp3 = io.BytesIO()
            encode_mp3(wav, rate, mp3, settings.audio)
            clips.setdefault(row.group, []).append((Path(row.file).stem, mp3.getvalue()))
        return [
            Section(f"<p>{line}</p>", line),
            Section(embedded_png(result.samples_dir / "spectrograms.png")),
            Section(audio_players(clips, "Audio (Griffin-Lim)")),
        ]


FAMILY = SpectralVaeFamily()
