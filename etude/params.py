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
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    create_model,
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
    source: Literal["maestro-sample", "maestro", "midi_dir", "groove"]
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
    drum_pitches: list[Annotated[int, Field(ge=0, le=127)]]  # lane -> GM drum note written when decoding drums

    @model_validator(mode="after")
    def _lanes(self) -> RhythmGrid:
        if sorted(self.band_edges) != self.band_edges or len(set(self.band_edges)) != len(self.band_edges):
            raise ValueError("band_edges must be strictly increasing")
        lanes = len(self.band_edges) - 1
        if max(self.drum_map.values(), default=0) >= lanes:
            raise ValueError(f"drum_map lanes must be below the {lanes} lanes that band_edges define")
        if len(self.drum_pitches) != lanes:
            raise ValueError(f"drum_pitches has {len(self.drum_pitches)} entries; band_edges define {lanes} lanes")
        # A decoded drum sample encodes back to the lanes it came from.
        strays = {lane: pitch for lane, pitch in enumerate(self.drum_pitches) if self.drum_map.get(pitch) != lane}
        if strays:
            raise ValueError("drum_pitches must name a note that drum_map maps to the same lane; not so for "
                             + ", ".join(f"lane {lane}: {pitch}" for lane, pitch in strays.items()))
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
    diagnostic_samples: Annotated[int, Field(ge=2)]  # drawn each epoch: generation's repetition, diversity, spread
    checkpoint_every: PositiveInt
    keep_checkpoints: NonNegativeInt  # periodic checkpoints kept per run (last and best always)
    device: Literal["auto", "cpu", "cuda"]
    threads: NonNegativeInt
    # A checkpoint to continue from: the next epoch, its best loss kept; lr, loss weights, epochs may differ.
    resume_from: str | None


TRAINING_KEYS = tuple(Training.model_fields)


# ---- evaluation, generation, report ------------------------------------------------------------
class Evaluate(Strict):
    max_windows: PositiveInt | None
    prior_samples: PositiveInt  # grid VAEs: z ~ N(0, I) decoded to compare with the test data


class SpreadBand(Strict):
    draws: Annotated[int, Field(ge=10)]  # random sets of test excerpts
    percentile: Annotated[float, Field(gt=0, lt=50)]  # the band runs from this percentile to 100 minus it


class Generate(Strict):
    temperatures: Annotated[list[PositiveFloat], Field(min_length=1)]
    num_samples: PositiveInt
    midi_files: PositiveInt
    num_notes: PositiveInt
    spread_band: SpreadBand  # next-note models: the σ ratio band of real test excerpts
    velocity: Annotated[int, Field(ge=1, le=127)]
    program: Annotated[int, Field(ge=0, le=127)]
    # grid VAEs
    sweep_steps: Annotated[int, Field(ge=2)]         # XY pad sweep: steps per axis (latent_dim 2)
    sweep_range: PositiveFloat                       # sweep over [-range, range] on each axis
    interpolations: NonNegativeInt                   # pairs of test windows
    interpolation_steps: Annotated[int, Field(ge=2)]
    grid_offset: Annotated[float, Field(ge=0, le=2)]  # scale of decoded timeshift (M4L knob)
    audio_examples: PositiveInt                      # spectral VAEs: reconstructions and prior samples rendered
    reference_excerpts: Annotated[int, Field(ge=2)]  # test and training excerpts the samples are judged against
    clock_bpm: PositiveFloat                         # beats of performance MIDI for beat metrics (clock units)
    clock_steps_per_beat: PositiveInt                # onset positions per clock beat (groove consistency)


class ReportAudio(Strict):
    """MP3 previews of samples in the report; each key is described in params.yaml."""

    sample_rate: Literal[8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000]  # MP3's rates
    compression_level: Annotated[float, Field(ge=0, le=1)]
    max_seconds: PositiveFloat


class Report(Strict):
    piano_roll_seconds: PositiveFloat
    audio: ReportAudio


class Remedies(Strict):
    """How far each verdict's remedy moves a setting; each is described in params.yaml."""

    lr_down: Annotated[float, Field(gt=0, lt=1)]
    grad_clip: PositiveFloat
    lr_up: Annotated[float, Field(gt=1)]
    decay_factor: Annotated[float, Field(gt=0, le=1)]
    decay_every: PositiveInt
    patience_factor: Annotated[float, Field(ge=1)]
    patience_add: PositiveInt
    dropout_step: Annotated[float, Field(gt=0, lt=1)]
    dropout_max: Annotated[float, Field(gt=0, lt=1)]
    transpose_semitones: PositiveInt
    context_factor: Annotated[float, Field(gt=1)]
    mode_collapse_lr: Annotated[float, Field(gt=0, lt=1)]
    anneal_factor: Annotated[float, Field(gt=1)]
    anneal_min_epochs: PositiveInt
    timeshift_factor: Annotated[float, Field(gt=1)]
    timeshift_min: PositiveFloat
    beta_down: Annotated[float, Field(gt=0, lt=1)]
    beta_up: Annotated[float, Field(gt=1)]
    featureless_lr: Annotated[float, Field(gt=0, lt=1)]
    output_reg_factor: Annotated[float, Field(gt=1)]
    output_reg_min: PositiveFloat
    spectral_factor: Annotated[float, Field(gt=1)]
    spectral_min: PositiveFloat


class Diagnosis(Strict):
    """Thresholds of the verdicts on training and samples (etude.diagnosis), and how far their remedies
    move a setting; each is described in params.yaml."""

    plateau_improvement: Annotated[float, Field(ge=0, lt=1)]
    plateau_min_epochs: PositiveInt
    spike_factor: Annotated[float, Field(gt=1)]
    grad_norm_factor: Annotated[float, Field(gt=1)]
    rising_epochs: PositiveInt
    rise_share: Annotated[float, Field(ge=0, lt=1)]
    premature_stop_share: Annotated[float, Field(gt=0, le=1)]
    collapse_std_ratio: Annotated[float, Field(gt=0, lt=1)]
    repetition_factor: Annotated[float, Field(gt=1)]
    diversity_ratio: Annotated[float, Field(gt=0, lt=1)]
    density_ratio: Annotated[float, Field(gt=1)]
    hf_energy_ratio: Annotated[float, Field(gt=0, lt=1)]
    kl_floor: PositiveFloat
    judge_epochs: PositiveInt
    remedies: Remedies


class Tracking(Strict):
    experiment: Annotated[str, Field(min_length=1)]


class Params(Training):
    data: Data
    ingest: Ingest
    tokenize: Tokenize
    grid: Grid
    audio: Audio
    mel: Mel
    models: dict[str, dict[str, Any]]  # one section per family, validated against the family's Config
    variants: dict[Annotated[str, Field(pattern=VARIANT_NAME)], dict[str, Any]]
    evaluate: Evaluate
    generate: Generate
    report: Report
    diagnosis: Diagnosis
    tracking: Tracking

    def variant(self, name: str) -> BaseModel:
        """The effective configuration of one variant (defaults, family section, overrides)."""
        if name not in self.variants:
            raise ParamsError(f"params.yaml: no variant {name!r}{_suggest(name, self.variants)}")
        overrides = self.variants[name]
        family = overrides.get("model")
        known = _families()
        if family not in known:
            raise ParamsError(f"params.yaml: variants.{name}.model is {family!r}; "
                              f"expected one of {sorted(known)}{_suggest(str(family), known)}")
        merged = _deep_merge({k: _plain(getattr(self, k)) for k in TRAINING_KEYS}, self.models[family])
        merged = _deep_merge(merged, overrides)
        cls = variant_class(family)
        try:
            return cls.model_validate(merged)
        except ValidationError as err:
            raise ParamsError(_describe(err, cls, prefix=f"variants.{name}.")) from None


def _families() -> dict:
    from etude.models import (
        families,  # families import this module: loaded on first use
    )

    return families()


@cache
def variant_class(family: str) -> type[BaseModel]:
    """A family's variant configuration: the shared training settings, its Config, and `model`."""
    config = _families()[family].Config
    name = f"{config.__name__.removesuffix('Config')}Variant"
    return create_model(name, __base__=(Training, config), model=(Literal[family], ...))


def _check_models(params: Params, path: Path) -> None:
    """Every family has its section under `models:`, each valid against the family's Config."""
    known = _families()
    for name in params.models:
        if name not in known:
            raise ParamsError(f"{path}: models.{name}: no such model family{_suggest(name, known)}")
    for name, family in known.items():
        if name not in params.models:
            raise ParamsError(f"{path}: models.{name}: required section is missing (family {name} is installed)")
        try:
            family.Config.model_validate(params.models[name])
        except ValidationError as err:
            raise ParamsError(_describe(err, family.Config, prefix=f"models.{name}.", source=path)) from None


def config_hash(config: BaseModel) -> str:
    """Short stable hash of an effective configuration: names its checkpoints and MLflow runs."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def load(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml, including every variant, before any work is done."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    return load_text(text, path)


def load_text(text: str, source: Path | str) -> Params:
    """Validate params given as YAML text; `source` names it in errors."""
    try:
        raw = YAML(typ="safe", pure=True).load(text)
    except Exception as err:  # ruamel raises several unrelated classes for malformed YAML
        raise ParamsError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(err, Params, prefix="", source=source)) from None
    _check_models(params, source)
    if params.data.source == "groove" and not params.ingest.include_drums:
        raise ParamsError(f"{source}: data.source 'groove' is a drum corpus, but ingest.include_drums is false "
                          "(every note would be dropped): set ingest.include_drums: true")
    for name in params.variants:
        params.variant(name)
    return params


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
        loc = e["loc"]
        key = prefix + ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key{_suggest(str(loc[-1]), _fields_at(model, loc[:-1]))}")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"{source}: invalid parameters:\n  " + "\n  ".join(lines)


def read_variant_config(path: Path) -> BaseModel:
    """A configuration written by the configure stage: what per-variant stages depend on and use."""
    try:
        raw = json.loads(Path(path).read_text())
        return variant_class(raw["model"]).model_validate(raw)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run the configure stage first") from None
    except (ValidationError, KeyError, json.JSONDecodeError) as err:
        raise ParamsError(f"{path}: invalid configuration: {err}") from None
