"""The model-family interface: what the pipeline knows about a family, and all it relies on.

A family is one module under etude/models/ that defines a subclass of `Family` and an instance of
it named `FAMILY`. The registry (etude.models.families) finds it there; params.yaml's `models:`
section is validated against its `Config`, its variants against `Config` plus the shared training
settings; the stage table renders its code (the modules of its class and its base classes, and the
files it declares in `code`) as the per-variant stages' dependencies and the checkpoint folder is
named after the same files' hash, so the two cannot disagree.

Every hook takes its arguments in one order: what it works on (the model, then the data, a batch
or a history), the variant's configuration, then the hook's own settings; a variant's name, where a
message or an override needs it, comes last.
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pandas as pd
import torch
from pydantic import BaseModel

from etude.diagnosis import SHARED_REMEDIES, Judge, Remedy, Verdict
from etude.errors import DataError

# Code every family's results depend on, besides the family's own: the interface, the training loop
# with its batches, seeds and checkpoints, and the writer of the published model.
SHARED_CODE = (
    "etude/family.py",
    "etude/training.py",
    "etude/batches.py",
    "etude/device.py",
    "etude/checkpoints.py",
    "etude/model_card.py",
)
ROOT = Path(__file__).resolve().parent.parent


class Representation(Protocol):
    """What a family's `load_data` returns: a representation stage's output, with what the family
    derives from it."""

    def empty_error(self, variant: str) -> str:
        """Why `variant` cannot read it (its stage wrote it empty: the file, the cause, the fix);
        "" when it holds examples."""


@dataclass(frozen=True)
class Section:
    """A family's contribution to its variant's part of the report."""

    html: str
    markdown: str = ""


@dataclass
class Results:
    """What the pipeline produced for one variant, as the report reads it."""

    name: str
    history: pd.DataFrame
    train: dict
    evaluation: dict
    generation: dict
    music: dict
    samples: pd.DataFrame
    samples_dir: Path
    runs: dict[str, dict]


Batch = tuple[torch.Tensor, ...]


class Family(ABC):
    """One model family. Subclasses set the class attributes and implement the abstract hooks."""

    name: ClassVar[str]  # the value of `model:` in a variant
    Config: ClassVar[type[BaseModel]]  # its section under `models:` in params.yaml
    code: ClassVar[
        tuple[str, ...]
    ] = ()  # source files beyond its classes' modules (task, representation)
    baselines: ClassVar[str]  # one sentence for the report: what its metrics are compared with
    # Report labels of `evaluate`'s reference groups, where the group key alone does not say it.
    group_labels: ClassVar[dict[str, str]] = {}
    # The family's own remedies, by the names diagnosis.ladders uses (etude.diagnosis.Remedy).
    remedies: ClassVar[dict[str, Remedy]] = {}
    # Test metrics (keys of eval.json's "model") the doctor weighs a remedy's side effects on, each
    # with its better side: "lower" or "higher".
    headline_metrics: ClassVar[dict[str, str]] = {}

    # ---- data ------------------------------------------------------------------------------------
    @abstractmethod
    def representation(self, config) -> str:
        """The representation the variant reads: a key of etude.pipeline.REPRESENTATIONS."""

    @abstractmethod
    def load_data(self, config, path: Path) -> Representation:
        """The representation at `path`, with what the family derives from it (windows, splits)."""

    @abstractmethod
    def split_size(self, data, config, split: str) -> int:
        """How many training examples (windows, segments) `split` offers this variant."""

    @abstractmethod
    def example(self, config) -> tuple[str, str]:
        """(what one example is, the setting that decides it), to name in an error; the setting may
        hold `{variant}`, as in "variants.{variant}.seq_len"."""

    def check_data(self, data: Representation, config, variant: str) -> None:
        """Fail before any training when a split cannot serve this variant."""
        if message := data.empty_error(variant):
            raise DataError(message)
        what, setting = self.example(config)
        for split in ("train", "validation", "test"):
            if self.split_size(data, config, split) == 0:
                raise DataError(
                    f"variant {variant}: the {split} split has no {what}; change "
                    f"{setting.format(variant=variant)} or give the {split} split more or "
                    "longer pieces"
                )
        train = self.split_size(data, config, "train")
        if train < config.batch_size:
            raise DataError(
                f"variant {variant}: the train split has {train} examples ({what}), fewer "
                f"than variants.{variant}.batch_size={config.batch_size}"
            )

    # ---- model -----------------------------------------------------------------------------------
    @abstractmethod
    def model_meta(self, data, config) -> dict[str, Any]:
        """JSON-serialisable facts from the data that rebuilding the model needs (shapes,
        statistics)."""

    @abstractmethod
    def build(self, config, meta: dict[str, Any]) -> torch.nn.Module:
        """The network, from its configuration and `model_meta`, without the data."""

    # ---- training --------------------------------------------------------------------------------
    @abstractmethod
    def train_batches(self, data, config, epoch: int, device: torch.device) -> Iterator[Batch]:
        """An epoch's batches; the order depends on (seed, epoch) alone, so a resumed run draws the
        same."""

    @abstractmethod
    def eval_batches(
        self, data, config, split: str, limit: int | None, device: torch.device
    ) -> Iterator[Batch]:
        """At most `limit` examples of `split`, in a fixed order."""

    @abstractmethod
    def loss(
        self, model, batch: Batch, config, epoch: int | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, named terms). epoch None: every schedule at its final weight (validation)."""

    def epoch_measures(
        self, model, data, config, epoch: int, device: torch.device
    ) -> dict[str, float]:
        """Extra per-epoch history columns: the validation statistics a pathology shows in."""
        return {}

    def judge(self, config, settings, variant: str) -> Judge:
        """What turns this family's measures into verdicts with remedies (`settings`: the
        `diagnosis:` params): the shared remedies and the family's own."""
        return Judge(config, settings, SHARED_REMEDIES | self.remedies, variant)

    def verdicts(self, history: pd.DataFrame, judge: Judge) -> list[Verdict]:
        """Verdicts on the pathologies this family is known for, from the history columns its
        `epoch_measures` adds, fired or not (each keeps its measure)."""
        return []

    # ---- evaluation, samples, report -------------------------------------------------------------
    @abstractmethod
    def evaluate(
        self, model, data, config, settings, device: torch.device
    ) -> dict[str, dict[str, float]]:
        """Test-split metrics: {"model": …, "baseline": …, other reference groups …}."""

    @abstractmethod
    def generate(
        self, model, data, config, settings, out_dir: Path, device: torch.device
    ) -> tuple[pd.DataFrame, dict[str, float]]:
        """Write samples into `out_dir`; return their table and statistics."""

    def judge_samples(self, data, config, settings, samples: pd.DataFrame) -> dict | None:
        """The samples judged against test excerpts of equal length, beside the ceiling (training
        excerpts against the same): etude.music.judge's result, or None where samples are not
        notes."""
        return None

    def report_sections(self, result: Results, config, settings) -> list[Section]:
        """Figures and text for the variant's part of the report (`settings`: the `report:`
        params)."""
        return []

    def comparison(self, result: Results, config, params) -> tuple[str, dict[str, Any]] | None:
        """(title, row) of the report's table comparing this variant with others of its kind; the
        variants of every family giving the same title share one table. None: no such table."""
        return None

    # ---- serving: a request answered by the trained model (etude.serving, MLflow pyfunc) ---------
    # `etude promote`: the MLflow metrics (of the LoggedModel) that decide whether a new version
    # beats the champion, in order, with their healthy side: the first beyond noise decides.
    champion_metrics: ClassVar[tuple[tuple[str, str], ...]] = ()

    # A request's fields: name -> (kind, required); kinds: long, double, bytes, matrix (rows of
    # numbers). The served model's signature.
    request_fields: ClassVar[dict[str, tuple[str, bool]]] = {}

    def request_example(self, config, meta: dict[str, Any]) -> dict[str, Any]:
        """A request `respond` answers: the served model's input example."""
        raise NotImplementedError(f"model family {self.name} does not serve requests")

    def respond(
        self, model, config, meta: dict[str, Any], request: dict[str, Any], settings
    ) -> dict[str, Any]:
        """One request's answer (`settings`: the `generate:` params logged with the model), with
        `midi` (bytes) where the answer is notes; the same request gives the same bytes."""
        raise NotImplementedError(f"model family {self.name} does not serve requests")

    # ---- identity of results ---------------------------------------------------------------------
    def own_code(self) -> tuple[str, ...]:
        """The family's own source files: its class's module, its base classes' (below Family), then
        the files it declares in `code`; relative to the root."""
        modules = [
            Path(inspect.getfile(cls)).resolve().relative_to(ROOT).as_posix()
            for cls in type(self).__mro__
            if issubclass(cls, Family) and cls is not Family
        ]
        return tuple(dict.fromkeys((*modules, *self.code)))

    def code_files(self) -> tuple[str, ...]:
        """Every source file whose change must re-run the family's variants, relative to the
        root."""
        return tuple(dict.fromkeys((*SHARED_CODE, *self.own_code())))

    def code_hash(self) -> str:
        """Names checkpoint folders: a resumed run never continues weights of other code."""
        digest = hashlib.sha256()
        for rel in self.code_files():
            digest.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes())
        return digest.hexdigest()[:8]
