"""The schema of params.yaml: every section but the model families' own, which each family declares.

YAML is read as YAML 1.2 (ruamel), so values that `dvc exp run -S` writes, such as `1e-05`, are
numbers. Every field is required: the numbers live in params.yaml, not here. This module imports
nothing of etude; etude.variants adds the families' sections and the variants on top of it and is
the loader every stage and the Snakefile use.
"""

from __future__ import annotations

import difflib
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
    frame_rate: PositiveInt  # onset-envelope frames per second
    refine_candidates: Annotated[int, Field(ge=3)]  # beat periods tried in each comb fit
    local_tolerance: Annotated[
        float, Field(ge=0, lt=0.5)
    ]  # estimate: per-window beat within +-this of the piece's

    @model_validator(mode="after")
    def _ordered(self) -> Tempo:
        if not self.min_bpm < self.max_bpm:
            raise ValueError("min_bpm must be below max_bpm")
        return self


class RhythmGrid(Strict):
    band_edges: Annotated[list[Annotated[int, Field(ge=0, le=128)]], Field(min_length=2)]
    drum_map: dict[Annotated[int, Field(ge=0, le=127)], NonNegativeInt]  # GM drum note -> lane
    drum_pitches: list[
        Annotated[int, Field(ge=0, le=127)]
    ]  # lane -> GM drum note written when decoding drums

    @model_validator(mode="after")
    def _lanes(self) -> RhythmGrid:
        if sorted(self.band_edges) != self.band_edges or len(set(self.band_edges)) != len(
            self.band_edges
        ):
            raise ValueError("band_edges must be strictly increasing")
        lanes = len(self.band_edges) - 1
        if max(self.drum_map.values(), default=0) >= lanes:
            raise ValueError(
                f"drum_map lanes must be below the {lanes} lanes that band_edges define"
            )
        if len(self.drum_pitches) != lanes:
            raise ValueError(
                f"drum_pitches has {len(self.drum_pitches)} entries; "
                f"band_edges define {lanes} lanes"
            )
        # A decoded drum sample encodes back to the lanes it came from.
        strays = {
            lane: pitch
            for lane, pitch in enumerate(self.drum_pitches)
            if self.drum_map.get(pitch) != lane
        }
        if strays:
            raise ValueError(
                "drum_pitches must name a note that drum_map maps to the same lane; not so for "
                + ", ".join(f"lane {lane}: {pitch}" for lane, pitch in strays.items())
            )
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
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # of the wheel
    member: str  # path of the .sf2 inside it
    member_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # of the .sf2


class Audio(Strict):
    use_recordings: bool  # MAESTRO's own recording when it exists on disk
    soundfont: SoundFont
    bank: NonNegativeInt
    preset: Annotated[int, Field(ge=0, le=127)]
    gain_db: float
    sustain_pedal: bool  # note ends held until the sustain pedal lifts
    tail_s: NonNegativeFloat  # rendered after the last note ends (release)


class Mel(Strict):
    sample_rate: PositiveInt
    n_fft: PositiveInt
    hop_length: PositiveInt
    n_mels: PositiveInt
    fmin: NonNegativeFloat
    fmax: PositiveFloat | None  # null: sample_rate / 2
    top_db: PositiveFloat  # dB below each segment's maximum where the floor lies
    segment_s: PositiveFloat
    segment_hop_s: PositiveFloat
    min_level_db: float  # segments whose RMS level (dBFS) is below this are silence: skipped
    max_seconds_per_piece: (
        PositiveFloat | None
    )  # quick runs: only the start of each piece; null = all
    shard_segments: PositiveInt  # segments per shard file: bounds memory and file count
    batch_segments: (
        PositiveInt  # segments per STFT batch: bounds a worker's memory, results identical
    )
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


# A factor a remedy or a rule scales a setting by: above 1 grows it, within (0, 1) shrinks it.
Growth = Annotated[float, Field(gt=1)]
Shrink = Annotated[float, Field(gt=0, lt=1)]


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
    diagnostic_samples: Annotated[
        int, Field(ge=2)
    ]  # drawn each epoch: generation's repetition, diversity, spread
    checkpoint_every: PositiveInt
    keep_checkpoints: NonNegativeInt  # periodic checkpoints kept per run (last and best always)
    device: Literal["auto", "cpu", "cuda"]
    threads: NonNegativeInt
    # A checkpoint to continue from: the next epoch, its best loss kept; lr, loss weights, epochs
    # may differ.
    resume_from: str | None


TRAINING_KEYS = tuple(Training.model_fields)


# ---- evaluation, generation, report ------------------------------------------------------------
class Evaluate(Strict):
    max_windows: PositiveInt | None
    prior_samples: PositiveInt  # grid VAEs: z ~ N(0, I) decoded to compare with the test data


class SpreadBand(Strict):
    draws: Annotated[int, Field(ge=10)]  # random sets of test excerpts
    percentile: Annotated[
        float, Field(gt=0, lt=50)
    ]  # the band runs from this percentile to 100 minus it


class Generate(Strict):
    temperatures: Annotated[list[PositiveFloat], Field(min_length=1)]
    num_samples: PositiveInt
    midi_files: PositiveInt
    num_notes: PositiveInt
    spread_band: SpreadBand  # next-note models: the σ ratio band of real test excerpts
    statistics_windows: (
        PositiveInt  # next-note models: test windows the samples' pitch statistics are set beside
    )
    velocity: Annotated[int, Field(ge=1, le=127)]
    program: Annotated[int, Field(ge=0, le=127)]
    # grid VAEs
    sweep_steps: Annotated[int, Field(ge=2)]  # XY pad sweep: steps per axis (latent_dim 2)
    sweep_range: PositiveFloat  # sweep over [-range, range] on each axis
    interpolations: NonNegativeInt  # pairs of test windows
    interpolation_steps: Annotated[int, Field(ge=2)]
    grid_offset: Annotated[float, Field(ge=0, le=2)]  # scale of decoded timeshift (M4L knob)
    audio_examples: PositiveInt  # spectral VAEs: reconstructions and prior samples rendered
    reference_excerpts: Annotated[
        int, Field(ge=2)
    ]  # test and training excerpts the samples are judged against
    clock_bpm: PositiveFloat  # beats of performance MIDI for beat metrics (clock units)
    clock_steps_per_beat: PositiveInt  # onset positions per clock beat (groove consistency)


class ReportAudio(Strict):
    """MP3 previews of samples in the report; each key is described in params.yaml."""

    sample_rate: Literal[
        8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000
    ]  # MP3's rates
    compression_level: Annotated[float, Field(ge=0, le=1)]
    max_seconds: PositiveFloat


class Report(Strict):
    piano_roll_seconds: PositiveFloat
    reference_temperature: (
        PositiveFloat  # tables across variants show the sampled temperature nearest this
    )
    audio: ReportAudio


class Remedies(Strict):
    """How far each verdict's remedy moves a setting; each is described in params.yaml."""

    lr_down: Shrink
    grad_clip: PositiveFloat
    lr_up: Growth
    decay_factor: Annotated[float, Field(gt=0, le=1)]
    decay_every: PositiveInt
    patience_factor: Annotated[float, Field(ge=1)]
    patience_add: PositiveInt
    dropout_step: Shrink
    dropout_max: Shrink
    transpose_semitones: PositiveInt
    context_factor: Growth
    mode_collapse_lr: Shrink
    anneal_factor: Growth
    anneal_min_epochs: PositiveInt
    timeshift_factor: Growth
    timeshift_min: PositiveFloat
    beta_down: Shrink
    beta_up: Growth
    featureless_lr: Shrink
    output_reg_factor: Growth
    output_reg_min: PositiveFloat
    spectral_factor: Growth
    spectral_min: PositiveFloat
    onset_threshold_max: Shrink
    free_bits_step: PositiveFloat


class Diagnosis(Strict):
    """Thresholds of the verdicts on training and samples (etude.diagnosis), and how far their
    remedies move a setting; each is described in params.yaml."""

    plateau_improvement: Annotated[float, Field(ge=0, lt=1)]
    plateau_min_epochs: PositiveInt
    decayed_lr_share: Shrink
    spike_factor: Growth
    grad_norm_factor: Growth
    rising_epochs: PositiveInt
    rise_share: Annotated[float, Field(ge=0, lt=1)]
    premature_stop_share: Annotated[float, Field(gt=0, le=1)]
    collapse_std_ratio: Shrink
    repetition_factor: Growth
    diversity_ratio: Shrink
    density_ratio: Growth
    hf_energy_ratio: Shrink
    kl_floor: PositiveFloat
    judge_epochs: PositiveInt
    remedies: Remedies
    # verdict -> remedies tried in order (etude.diagnosis.SHARED_REMEDIES or a family's)
    ladders: dict[str, list[str]]


class Doctor(Strict):
    """`etude doctor`: how remedies are tried and judged; each key is described in params.yaml."""

    seeds: NonNegativeInt
    max_rounds: PositiveInt
    steps_per_remedy: PositiveInt
    noise_factor: PositiveFloat
    jobs: NonNegativeInt
    poll_seconds: PositiveFloat
    loss_settings: list[Annotated[str, Field(min_length=1)]]


class Tracking(Strict):
    experiment: Annotated[str, Field(min_length=1)]


class Params(Training):
    data: Data
    ingest: Ingest
    tokenize: Tokenize
    grid: Grid
    audio: Audio
    mel: Mel
    models: dict[
        str, dict[str, Any]
    ]  # one section per family, validated against the family's Config
    variants: dict[Annotated[str, Field(pattern=VARIANT_NAME)], dict[str, Any]]
    evaluate: Evaluate
    generate: Generate
    report: Report
    diagnosis: Diagnosis
    doctor: Doctor
    tracking: Tracking


def parse(path: Path | str = PARAMS_FILE) -> Params:
    """Read params.yaml and validate it against the schema. The families' sections and the variants
    are validated by etude.variants.load, the loader every stage uses."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    return parse_text(text, path)


def parse_text(text: str, source: Path | str) -> Params:
    """Validate params given as YAML text against the schema; `source` names it in errors."""
    try:
        raw = YAML(typ="safe", pure=True).load(text)
    except Exception as err:  # ruamel raises several unrelated classes for malformed YAML
        raise ParamsError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(describe(err, Params, prefix="", source=source)) from None
    if params.data.source == "groove" and not params.ingest.include_drums:
        raise ParamsError(
            f"{source}: data.source 'groove' is a drum corpus, but ingest.include_drums is false "
            "(every note would be dropped): set ingest.include_drums: true"
        )
    return params


# ---- helpers ------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    return value.model_dump(mode="python") if isinstance(value, BaseModel) else value


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def suggest(word: str, candidates: Any) -> str:
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


def describe(
    err: ValidationError, model: type[BaseModel], prefix: str, source: Path = PARAMS_FILE
) -> str:
    lines = []
    for e in err.errors():
        loc = e["loc"]
        key = prefix + ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key{suggest(str(loc[-1]), _fields_at(model, loc[:-1]))}")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"{source}: invalid parameters:\n  " + "\n  ".join(lines)
