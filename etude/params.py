"""The one typed loader of params.yaml, used by every stage and by the Snakefile.

YAML is read as YAML 1.2 (ruamel), so values that `dvc exp run -S` writes, such as `1e-05`, are
numbers. Every field is required: the numbers live in params.yaml, not here. A variant's effective
configuration is the shared training defaults, overlaid with its model family's section under
`models:`, overlaid with the variant's own entry under `variants:`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from ruamel.yaml import YAML

PARAMS_FILE = Path("params.yaml")
VARIANT_NAME = r"^[a-z][a-z0-9_]*$"


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or names an unknown key or impossible value."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- data ---------------------------------------------------------------------------------------
class SampleSource(Strict):
    package: str
    version: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    member_dir: str
    validation: list[str]
    test: list[str]


class SplitFractions(Strict):
    validation: Annotated[float, Field(ge=0, lt=1)]
    test: Annotated[float, Field(ge=0, lt=1)]

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitFractions:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must be below 1, or nothing is left to train on")
        return self


class Data(Strict):
    source: Literal["maestro-sample", "maestro", "midi_dir"]
    path: str | None
    sample: SampleSource
    midi_dir_split: SplitFractions

    @model_validator(mode="after")
    def _path_for_local_sources(self) -> Data:
        if self.source != "maestro-sample" and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        return self


class Ingest(Strict):
    workers: PositiveInt
    min_notes: PositiveInt
    max_duration_s: PositiveFloat
    include_drums: bool


class Tokenize(Strict):
    sort_chords_by_pitch: bool


class Tempo(Strict):
    """Where beat positions come from. Performance MIDI (MAESTRO) has a placeholder tempo map."""

    source: Literal["file", "estimate", "fixed"]
    fixed_bpm: PositiveFloat
    min_bpm: PositiveFloat
    max_bpm: PositiveFloat
    prior_bpm: PositiveFloat
    prior_octaves: PositiveFloat  # width of the log-normal prior on tempo, in octaves
    frame_rate: PositiveInt       # onset-envelope frames per second
    refine_candidates: Annotated[int, Field(ge=3)]  # beat periods tried in each comb fit
    local_tolerance: Annotated[float, Field(ge=0, lt=0.5)]  # estimate: per-window beat within +-this of the piece's

    @model_validator(mode="after")
    def _ordered(self) -> Tempo:
        if not self.min_bpm < self.max_bpm:
            raise ValueError("min_bpm must be below max_bpm")
        return self


class RhythmGrid(Strict):
    band_edges: Annotated[list[Annotated[int, Field(ge=0, le=128)]], Field(min_length=2)]
    drum_map: dict[Annotated[int, Field(ge=0, le=127)], NonNegativeInt]  # GM drum note -> lane

    @model_validator(mode="after")
    def _lanes(self) -> RhythmGrid:
        if sorted(self.band_edges) != self.band_edges or len(set(self.band_edges)) != len(self.band_edges):
            raise ValueError("band_edges must be strictly increasing")
        lanes = len(self.band_edges) - 1
        if max(self.drum_map.values(), default=0) >= lanes:
            raise ValueError(f"drum_map lanes must be below the {lanes} lanes that band_edges define")
        return self


class MelodyGrid(Strict):
    base_note: Annotated[int, Field(ge=0, le=127)]
    rows: Annotated[int, Field(ge=1, le=128)]
    voice: Literal["all", "skyline"]


class Grid(Strict):
    bars: PositiveInt
    beats_per_bar: PositiveInt
    steps_per_beat: PositiveInt
    tempo: Tempo
    min_onsets: NonNegativeInt
    duration_min: PositiveFloat  # half notes
    duration_max: PositiveFloat
    rhythm: RhythmGrid
    melody: MelodyGrid


# ---- audio and mel spectrograms -----------------------------------------------------------------
class SoundFont(Strict):
    """A General MIDI SoundFont shipped inside a pinned PyPI wheel (no system packages needed)."""

    package: str
    version: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]         # of the wheel
    member: str                                                      # path of the .sf2 inside it
    member_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # of the .sf2


class Audio(Strict):
    use_recordings: bool              # MAESTRO's own recording when it exists on disk
    soundfont: SoundFont
    bank: NonNegativeInt
    preset: Annotated[int, Field(ge=0, le=127)]
    gain_db: float
    sustain_pedal: bool               # note ends held until the sustain pedal lifts
    tail_s: NonNegativeFloat          # rendered after the last note ends (release)


class Mel(Strict):
    sample_rate: PositiveInt
    n_fft: PositiveInt
    hop_length: PositiveInt
    n_mels: PositiveInt
    fmin: NonNegativeFloat
    fmax: PositiveFloat | None        # null: sample_rate / 2
    top_db: PositiveFloat             # dB below each segment's maximum where the floor lies
    segment_s: PositiveFloat
    segment_hop_s: PositiveFloat
    min_level_db: float               # segments whose RMS level (dBFS) is below this are silence: skipped
    max_seconds_per_piece: PositiveFloat | None  # quick runs: only the start of each piece; null = all
    shard_segments: PositiveInt       # segments per shard file: bounds memory and file count
    batch_segments: PositiveInt       # segments per STFT batch: bounds a worker's memory, results identical
    workers: PositiveInt

    @model_validator(mode="after")
    def _consistent(self) -> Mel:
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            raise ValueError(f"need fmin < fmax <= sample_rate / 2 ({nyquist:g})")
        if self.fmin >= nyquist:
            raise ValueError(f"fmin must be below sample_rate / 2 ({nyquist:g})")
        if self.segment_s * self.sample_rate < self.n_fft:
            raise ValueError("segment_s is shorter than one FFT window")
        return self


# ---- training -----------------------------------------------------------------------------------
class LrSchedule(Strict):
    kind: Literal["none", "plateau", "step"]
    factor: Annotated[float, Field(gt=0, le=1)]
    patience: NonNegativeInt
    every: PositiveInt
    min_lr: NonNegativeFloat


class Training(Strict):
    """Shared training defaults: top level of params.yaml, overridable per variant."""

    seed: int
    lr: PositiveFloat
    batch_size: PositiveInt
    epochs: PositiveInt
    samples_per_epoch: PositiveInt | None
    val_max_windows: PositiveInt | None
    patience: PositiveInt | None
    min_delta: NonNegativeFloat
    lr_schedule: LrSchedule
    grad_clip: PositiveFloat | None
    checkpoint_every: PositiveInt
    device: Literal["auto", "cpu", "cuda"]
    threads: NonNegativeInt
    resume_from: str | None  # a checkpoint to continue from: next epoch, its best loss kept; lr, loss weights, epochs may differ


TRAINING_KEYS = tuple(Training.model_fields)


class NoteRnnLossWeights(Strict):
    pitch: NonNegativeFloat
    step: NonNegativeFloat
    duration: NonNegativeFloat


class NoteRnn(Strict):
    """Next-note LSTM over (pitch, step, duration), the TensorFlow tutorial's model family."""

    seq_len: Annotated[int, Field(ge=2)]
    lstm_units: Annotated[list[PositiveInt], Field(min_length=1)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    vocab_size: Annotated[int, Field(ge=1, le=128)]
    loss_weights: NoteRnnLossWeights
    positive_pressure: NonNegativeFloat
    transpose_semitones: Annotated[int, Field(ge=0, le=24)]


class NoteRnnVariant(Training, NoteRnn):
    model: Literal["note_rnn"]


class GridLossCoefficients(Strict):
    onset: NonNegativeFloat
    velocity: NonNegativeFloat
    duration: NonNegativeFloat
    timeshift: NonNegativeFloat


class KlSchedule(Strict):
    beta: NonNegativeFloat           # weight once annealed
    start_epoch: NonNegativeInt      # weight 0 before this epoch
    anneal_epochs: NonNegativeInt    # linear 0 -> beta over this many epochs (0: beta at once)
    cyclical: bool                   # restart the ramp every anneal_epochs (Fu et al. 2019)
    free_bits: NonNegativeFloat      # nats per latent dimension below which KL is not penalised


class GridVae(Strict):
    """RhythmVAE / MelodyVAE (M4L) family: dense VAE over onset/velocity/duration/timeshift grids."""

    representation: Literal["rhythm", "melody"]
    latent_dim: PositiveInt
    encoder_units: PositiveInt
    decoder_units: PositiveInt
    head_units: PositiveInt
    leaky_slope: NonNegativeFloat
    dropout: Annotated[float, Field(ge=0, lt=1)]
    batchnorm_momentum: Annotated[float, Field(gt=0, le=1)]
    loss: GridLossCoefficients
    mask_to_onsets: bool             # velocity/duration/timeshift error on onset cells only
    kl: KlSchedule
    timeshift_ramp_epochs: NonNegativeInt
    val_batch_size: PositiveInt
    onset_threshold: Annotated[float, Field(gt=0, lt=1)]  # decoding threshold: metrics and samples (the M4L knob)
    active_unit_threshold: PositiveFloat    # Var_x(mu_j) above this: dimension j is in use
    collapse_variance: PositiveFloat        # decoded timeshift variance below this: collapsed


class GridVaeVariant(Training, GridVae):
    model: Literal["grid_vae"]


class FrequencyBand(Strict):
    start: Annotated[float, Field(ge=0, le=1)]  # fraction of the mel bins
    end: Annotated[float, Field(ge=0, le=1)]
    weight: NonNegativeFloat


class SpectralVae(Strict):
    """Convolutional VAE over log-mel segments (the PyTorch "MusicVAE" of the documents)."""

    channels: Annotated[list[PositiveInt], Field(min_length=1)]  # one stride-2 conv block each
    latent_dim: PositiveInt
    kernel_size: Annotated[int, Field(ge=1)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    batchnorm_momentum: Annotated[float, Field(gt=0, le=1)]
    recon_bands: list[FrequencyBand]  # frequency weighting; bins outside every band weigh 1
    kl: KlSchedule
    spectral_weight: NonNegativeFloat    # MSE of |FFT2| of input and reconstruction
    output_reg_weight: NonNegativeFloat  # outputs outside the input's range, widened by range_margin
    range_margin: NonNegativeFloat       # x R, R the input's range
    val_split: Annotated[float, Field(gt=0, lt=1)] | None  # held-out share of training segments; null: the validation split
    val_batch_size: PositiveInt
    active_unit_threshold: PositiveFloat
    featureless_std_db: PositiveFloat    # spectrogram whose dB std is below this: featureless
    hf_fraction: Annotated[float, Field(gt=0, lt=1)]  # top share of bins: the high-frequency energy ratio
    griffin_lim_iters: PositiveInt

    @model_validator(mode="after")
    def _bands(self) -> SpectralVae:
        for band in self.recon_bands:
            if band.start >= band.end:
                raise ValueError(f"recon_bands: start {band.start} must be below end {band.end}")
        return self


class SpectralVaeVariant(Training, SpectralVae):
    model: Literal["spectral_vae"]


# A new model family adds its section class here and one union member below.
class Models(Strict):
    note_rnn: NoteRnn
    grid_vae: GridVae
    spectral_vae: SpectralVae


VariantConfig = Annotated[Union[NoteRnnVariant, GridVaeVariant, SpectralVaeVariant], Field(discriminator="model")]
_VARIANT_ADAPTER: TypeAdapter[VariantConfig] = TypeAdapter(VariantConfig)
_VARIANT_CLASSES: dict[str, type[BaseModel]] = {
    "note_rnn": NoteRnnVariant, "grid_vae": GridVaeVariant, "spectral_vae": SpectralVaeVariant}


# ---- evaluation, generation, report ------------------------------------------------------------
class Evaluate(Strict):
    max_windows: PositiveInt | None
    prior_samples: PositiveInt  # grid VAEs: z ~ N(0, I) decoded to compare with the test data


class Generate(Strict):
    temperatures: Annotated[list[PositiveFloat], Field(min_length=1)]
    num_samples: PositiveInt
    midi_files: PositiveInt
    num_notes: PositiveInt
    velocity: Annotated[int, Field(ge=1, le=127)]
    program: Annotated[int, Field(ge=0, le=127)]
    # grid VAEs
    sweep_steps: Annotated[int, Field(ge=2)]         # XY pad sweep: steps per axis (latent_dim 2)
    sweep_range: PositiveFloat                       # sweep over [-range, range] on each axis
    interpolations: NonNegativeInt                   # pairs of test windows
    interpolation_steps: Annotated[int, Field(ge=2)]
    grid_offset: Annotated[float, Field(ge=0, le=2)]  # scale of decoded timeshift (M4L knob)
    audio_examples: PositiveInt                      # spectral VAEs: reconstructions and prior samples rendered


class Report(Strict):
    piano_roll_seconds: PositiveFloat
    plateau_improvement: Annotated[float, Field(ge=0, lt=1)]


class Tracking(Strict):
    experiment: Annotated[str, Field(min_length=1)]


class Params(Training):
    data: Data
    ingest: Ingest
    tokenize: Tokenize
    grid: Grid
    audio: Audio
    mel: Mel
    models: Models
    variants: dict[Annotated[str, Field(pattern=VARIANT_NAME)], dict[str, Any]]
    evaluate: Evaluate
    generate: Generate
    report: Report
    tracking: Tracking

    def variant(self, name: str) -> NoteRnnVariant | GridVaeVariant | SpectralVaeVariant:
        """The effective configuration of one variant (defaults, family section, overrides)."""
        if name not in self.variants:
            raise ParamsError(f"params.yaml: no variant {name!r}{_suggest(name, self.variants)}")
        overrides = self.variants[name]
        family = overrides.get("model")
        if family not in _VARIANT_CLASSES:
            raise ParamsError(
                f"params.yaml: variants.{name}.model is {family!r}; "
                f"expected one of {sorted(_VARIANT_CLASSES)}{_suggest(str(family), _VARIANT_CLASSES)}"
            )
        merged = _deep_merge(
            {k: _plain(getattr(self, k)) for k in TRAINING_KEYS},
            _plain(getattr(self.models, family)),
        )
        merged = _deep_merge(merged, overrides)
        try:
            return _VARIANT_ADAPTER.validate_python(merged)
        except ValidationError as err:
            raise ParamsError(
                _describe(err, _VARIANT_CLASSES[family], prefix=f"variants.{name}.")
            ) from None


def config_hash(config: BaseModel) -> str:
    """Short stable hash of an effective configuration: names its checkpoints and MLflow runs."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def read_yaml(path: Path) -> Any:
    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except Exception as err:  # ruamel raises several unrelated classes for malformed YAML
        raise ParamsError(f"{path}: not valid YAML: {err}") from None


def load(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml, including every variant, before any work is done."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(err, Params, prefix="", source=path)) from None
    for name in params.variants:
        params.variant(name)
    return params


@lru_cache(maxsize=4)
def load_cached(path: str = str(PARAMS_FILE)) -> Params:
    return load(path)


# ---- helpers ------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    return value.model_dump(mode="python") if isinstance(value, BaseModel) else value


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _suggest(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(candidates))}"


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the (nested) model at `loc`, to suggest the nearest one to an unknown key."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = field.annotation
        for arg in getattr(current, "__args__", ()):  # Optional[Model] / Annotated
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _describe(
    err: ValidationError, model: type[BaseModel], prefix: str, source: Path = PARAMS_FILE
) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in _VARIANT_CLASSES))
        key = prefix + ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key{_suggest(str(loc[-1]), _fields_at(model, loc[:-1]))}")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"{source}: invalid parameters:\n  " + "\n  ".join(lines)


def read_variant_config(path: Path) -> NoteRnnVariant | GridVaeVariant | SpectralVaeVariant:
    """A configuration written by the configure stage: what per-variant stages depend on and use."""
    try:
        return _VARIANT_ADAPTER.validate_json(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run the configure stage first") from None
    except ValidationError as err:
        raise ParamsError(f"{path}: invalid configuration: {err}") from None
