"""The model-family interface: what the pipeline knows about a family, and all it relies on.

A family is one module under etude/models/ that defines a subclass of `Family` and an instance of
it named `FAMILY`. The registry (etude.models.families) finds it there; params.yaml's `models:`
section is validated against its `Config`, its variants against `Config` plus the shared training
settings; the stage table renders its `code` as the per-variant stages' dependencies and the
checkpoint folder is named after the same files' hash, so the two cannot disagree.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from pydantic import BaseModel

from etude.diagnosis import more_dropout

# Code every family's results depend on, besides the family's own declaration.
SHARED_CODE = ("etude/family.py", "etude/training.py")
ROOT = Path(__file__).resolve().parent.parent


class DataError(ValueError):
    """A variant cannot train on its data: the message names the split and the setting to change."""


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

    name: ClassVar[str]                 # the value of `model:` in a variant
    Config: ClassVar[type[BaseModel]]   # its section under `models:` in params.yaml
    code: ClassVar[tuple[str, ...]]     # its source files (module, task, representation, writers)
    baselines: ClassVar[str]            # one sentence for the report: what its metrics are compared with

    # ---- data ------------------------------------------------------------------------------------
    @abstractmethod
    def representation(self, config) -> str:
        """The representation the variant reads: a key of etude.pipeline.REPRESENTATIONS."""

    @abstractmethod
    def load_data(self, config, path: Path) -> Any:
        """The representation at `path`, with what the family derives from it (windows, splits)."""

    @abstractmethod
    def split_size(self, config, data, split: str) -> int:
        """How many training examples (windows, segments) `split` offers this variant."""

    @abstractmethod
    def example(self, config) -> tuple[str, str]:
        """(what one example is, the setting that decides it), to name in an error; the setting may
        hold `{variant}`, as in "variants.{variant}.seq_len"."""

    def check_data(self, variant: str, config, data) -> None:
        """Fail before any training when a split cannot serve this variant."""
        # A representation its stage wrote empty (the melody grids of a drum corpus) says why, and the fix.
        empty = getattr(data, "empty_error", None)
        if empty is not None and (message := empty(variant)):
            raise DataError(message)
        what, setting = self.example(config)
        for split in ("train", "validation", "test"):
            if self.split_size(config, data, split) == 0:
                raise DataError(f"variant {variant}: the {split} split has no {what}; change "
                                f"{setting.format(variant=variant)} or give the {split} split more or longer pieces")
        train = self.split_size(config, data, "train")
        if train < config.batch_size:
            raise DataError(f"variant {variant}: the train split has {train} examples ({what}), fewer than "
                            f"variants.{variant}.batch_size={config.batch_size}")

    # ---- model -----------------------------------------------------------------------------------
    @abstractmethod
    def model_meta(self, config, data) -> dict[str, Any]:
        """JSON-serialisable facts from the data that rebuilding the model needs (shapes, statistics)."""

    @abstractmethod
    def build(self, config, meta: dict[str, Any]) -> torch.nn.Module:
        """The network, from its configuration and `model_meta`, without the data."""

    # ---- training --------------------------------------------------------------------------------
    @abstractmethod
    def train_batches(self, data, config, epoch: int, device: torch.device) -> Iterator[Batch]:
        """An epoch's batches; the order depends on (seed, epoch) alone, so a resumed run draws the same."""

    @abstractmethod
    def eval_batches(self, data, config, split: str, limit: int | None, device: torch.device) -> Iterator[Batch]:
        """At most `limit` examples of `split`, in a fixed order."""

    @abstractmethod
    def loss(self, model, batch: Batch, config, epoch: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, named terms). epoch None: every schedule at its final weight (validation)."""

    def diagnostics(self, model, data, config, epoch: int, device: torch.device) -> dict[str, float]:
        """Extra per-epoch history columns (validation statistics a pathology shows in)."""
        return {}

    # ---- evaluation, samples, report ----------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model, data, config, settings, device: torch.device) -> dict[str, dict[str, float]]:
        """Test-split metrics: {"model": …, "baseline": …, other reference groups …}."""

    @abstractmethod
    def generate(self, model, data, config, settings, out_dir: Path,
                 device: torch.device) -> tuple[pd.DataFrame, dict[str, float]]:
        """Write samples into `out_dir`; return their table and statistics."""

    def diagnose(self, variant: str, history: pd.DataFrame, config, settings) -> list:
        """Verdicts (etude.diagnosis.Verdict) on the pathologies this family is known for, from the
        per-epoch columns its `diagnostics` adds; `settings`: the `diagnosis:` thresholds."""
        return []

    def regularize(self, variant: str, config, remedies) -> dict[str, Any]:
        """The overrides that remedy overfitting (`remedies`: the `diagnosis.remedies` params): more
        dropout where the model has it."""
        return more_dropout(variant, config, remedies)

    def music(self, data, config, settings, samples: pd.DataFrame) -> dict | None:
        """The samples judged against test excerpts of equal length, beside the ceiling (training
        excerpts against the same): etude.music.judge's result, or None where samples are not notes."""
        return None

    def report_sections(self, result: Results, config, settings) -> list[Section]:
        """Figures and text for the variant's part of the report."""
        return []

    # ---- identity of results -------------------------------------------------------------------------
    def code_files(self) -> tuple[str, ...]:
        """Every source file whose change must re-run the family's variants, relative to the root."""
        return tuple(dict.fromkeys((*SHARED_CODE, *self.code)))

    def code_hash(self) -> str:
        """Names checkpoint folders: a resumed run never continues weights of other code."""
        digest = hashlib.sha256()
        for rel in self.code_files():
            digest.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes())
        return digest.hexdigest()[:8]
