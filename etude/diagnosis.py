"""Verdicts on the pathologies the documents debug by hand, each with its evidence and remedy.

A verdict names the pathology, the epoch it first showed, the measure that shows it against its
limit, and a remedy as params overrides that `dvc exp run` takes as printed (`-S ++key=value` sets a
key whether or not the variant's entry has it). Every rule is judged on every training, fired or
not, so that `etude doctor` can compare a remedied run's measure with its parent's.

Remedies are named (`Remedy`); `diagnosis.ladders` lists, per verdict, the remedies to try in
order. A verdict's remedy is the first on its ladder that proposes a setting not already in force:
after a remedy was applied, the same rule proposes the next step in the same direction (dropout
0.2 -> 0.4), and once that is exhausted, the next remedy on the ladder. Every threshold, and how
far each remedy moves a setting, is a `diagnosis:` param: changing one re-runs train, which finds
its finished checkpoint and only re-judges.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from etude.params import Diagnosis, Remedies

Better = Literal["higher", "lower"]  # the healthy side of a verdict's limit


@dataclass(frozen=True)
class Verdict:
    name: str  # the pathology, snake_case
    evidence: str  # the numbers, in words
    remedy: str  # what the documents prescribe, in words
    overrides: dict[str, Any] = field(default_factory=dict)  # params path -> value
    epoch: int | None = None  # 1-based epoch it first showed; None: judged on the whole run
    value: float | None = None  # the measure the rule judges ...
    limit: float | None = None  # ... against this limit ...
    better: Better = "lower"  # ... healthy on this side of it
    fired: bool = True  # False: judged and healthy; kept for its measure
    rung: str = ""  # the ladder's remedy that `overrides` apply
    remedy_value: float | None = None  # what a remedy that moves with the measure read

    @property
    def command(self) -> str:
        if not self.overrides:
            return ""
        return "dvc exp run " + " ".join(
            f"-S ++{key}={literal(value)}" for key, value in self.overrides.items()
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"command": self.command}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Verdict:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in row.items() if k in known})

    def line(self) -> str:
        when = f" (epoch {self.epoch})" if self.epoch is not None else ""
        command = f" `{self.command}`" if self.command else ""
        return f"{self.name}{when}: {self.evidence}. Remedy: {self.remedy}{command}"


def fired(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.fired]


def measures(verdicts: list[Verdict]) -> dict[str, dict[str, Any]]:
    """Every judged rule's measure by verdict name, fired or not: what `etude doctor` compares."""
    return {
        v.name: {"value": v.value, "limit": v.limit, "better": v.better, "fired": v.fired}
        | ({"remedy_value": v.remedy_value} if v.remedy_value is not None else {})
        for v in verdicts
    }


def literal(value: Any) -> str:
    """A value as Hydra's override grammar reads it back with the same type."""
    if isinstance(value, float):
        return f"{value:.6g}" if "e" not in f"{value:.6g}" else repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def variant_key(variant: str, setting: str) -> str:
    """The params path of a variant's setting: a variant overrides its family's defaults."""
    return f"variants.{variant}.{setting}"


def setting_of(key: str) -> str:
    """The setting an override key names: `variants.<variant>.<setting>` -> `<setting>`."""
    return key.split(".", 2)[2]


def in_force(config, setting: str) -> Any:
    """The value of a dotted setting in a variant's configuration."""
    now = config
    for name in setting.split("."):
        now = getattr(now, name)
    return now


def changes(config, overrides: dict[str, Any]) -> str:
    """What overrides change, as a remedy's words say it:
    "lr 0.001 -> 0.0005, kl.beta 0.1 -> 0.05"."""
    parts = []
    for key, value in overrides.items():
        setting = setting_of(key)
        parts.append(f"{setting} {literal(in_force(config, setting))} -> {literal(value)}")
    return ", ".join(parts)


def scaled(value: float, factor: float) -> float:
    """A setting's remedy value, to three significant digits as a user would type it."""
    return float(f"{value * factor:.3g}")


def raised(value: float, factor: float, floor: float) -> float:
    """A weight's remedy value: `factor` x larger, and at least `floor` (a weight of 0 stays 0 when
    only scaled)."""
    return max(scaled(value, factor), floor)


# A remedy proposes settings (relative to the variant) from the configuration in force, the
# `diagnosis.remedies` steps, and the verdict's measure (for remedies that move with it).
Proposal = Callable[[Any, Remedies, float | None], dict[str, Any]]


@dataclass(frozen=True)
class Remedy:
    words: str  # what it does, as the report says it
    propose: Proposal


def _lower_lr(config, remedies: Remedies, value) -> dict[str, Any]:
    """The documents' fix for unstable training: 0.005 -> 0.001, with clipping where it was off."""
    proposal: dict[str, Any] = {"lr": scaled(config.lr, remedies.lr_down)}
    if config.grad_clip is None:
        proposal["grad_clip"] = remedies.grad_clip
    return proposal


def _slower_decay(config, remedies: Remedies, value) -> dict[str, Any]:
    """The documents' step decay 0.95 every 5 epochs -> 0.98 every 8; only a step schedule has
    one."""
    schedule = config.lr_schedule
    if schedule.kind != "step":
        return {}
    return {
        "lr_schedule.factor": max(remedies.decay_factor, schedule.factor),
        "lr_schedule.every": max(remedies.decay_every, schedule.every),
    }


def _more_patience(config, remedies: Remedies, value) -> dict[str, Any]:
    """Patience 15 stopped MelodyVAE at ~35 epochs, before timeshift had learned; 25 fixed it."""
    if config.patience is None:
        return {}
    more = max(round(remedies.patience_factor * config.patience), config.patience + 1)
    return {"patience": max(more, config.patience + remedies.patience_add)}


def more_dropout(config, remedies: Remedies, value) -> dict[str, Any]:
    return {"dropout": round(min(config.dropout + remedies.dropout_step, remedies.dropout_max), 2)}


# The remedies every family can take; a family adds its own (`Family.remedies`).
SHARED_REMEDIES: dict[str, Remedy] = {
    "lower_lr": Remedy("a lower learning rate", _lower_lr),
    "higher_lr": Remedy("a higher learning rate", lambda c, r, v: {"lr": scaled(c.lr, r.lr_up)}),
    "slower_decay": Remedy("a slower learning-rate decay", _slower_decay),
    "more_patience": Remedy("more patience", _more_patience),
    "more_dropout": Remedy("more dropout", more_dropout),
}


@dataclass(frozen=True)
class Judge:
    """Turns a rule's measure into a verdict with the first new remedy on the verdict's ladder."""

    config: Any
    settings: Diagnosis
    remedies: dict[str, Remedy]
    variant: str

    def __call__(
        self,
        name: str,
        fired: bool,
        evidence: str,
        value: float,
        limit: float,
        better: Better,
        epoch: int | None = None,
        remedy_value: float | None = None,
    ) -> Verdict:
        """`remedy_value`: what a remedy that moves with the measure reads, where not `value`."""
        at = value if remedy_value is None else remedy_value
        rung, words, overrides = self.prescribe(name, at) if fired else ("", "", {})
        return Verdict(
            name,
            evidence,
            words,
            overrides,
            epoch,
            float(value),
            float(limit),
            better,
            fired,
            rung,
            None if remedy_value is None else float(remedy_value),
        )

    def prescribe(
        self, name: str, value: float | None = None, skip: Collection[str] = ()
    ) -> tuple[str, str, dict[str, Any]]:
        """(the remedy's name, its words, its overrides): the first remedy on `name`'s ladder, but
        those in `skip` (stepped as far as the doctor allows), that proposes a setting not in
        force; ("", words, {}) when the ladder is exhausted."""
        for rung in self.settings.ladders.get(name, []):
            remedy = self.remedies.get(rung)
            if remedy is None or rung in skip:  # None: another family's remedy on a shared ladder
                continue
            proposal = remedy.propose(self.config, self.settings.remedies, value)
            new = {
                variant_key(self.variant, setting): to
                for setting, to in proposal.items()
                if in_force(self.config, setting) != to
            }
            if new:
                return rung, f"{remedy.words} ({changes(self.config, new)})", new
        return "", f"nothing left to try on diagnosis.ladders.{name}", {}


def first_epoch(flags: pd.Series, epochs: pd.Series) -> int | None:
    """The 1-based epoch of the first True in `flags`."""
    hits = np.flatnonzero(flags.to_numpy())
    return int(epochs.iloc[hits[0]]) + 1 if len(hits) else None


def recent(h: pd.DataFrame, column: str, settings: Diagnosis) -> float:
    """A sampled measure as judged: its median over the last `judge_epochs` epochs, as one epoch's
    few seeded samples swing it."""
    return float(h[column].iloc[-settings.judge_epochs :].median())


def training_verdicts(
    history: pd.DataFrame, summary: dict[str, Any], judge: Judge
) -> list[Verdict]:
    """The pathologies any training can show: non-finite loss, loss spikes, exploding gradients,
    loss rising mid-training (unstable) or only on validation (overfitting), a plateau, and early
    stopping before the loss had settled. Every rule that can be judged is returned, fired or
    not."""
    epochs = history["epoch"]
    non_finite = ~np.isfinite(history[["train_loss", "val_loss"]]).all(axis=1)
    epoch = first_epoch(non_finite, epochs)
    verdicts = [
        judge(
            "non_finite_loss",
            bool(non_finite.any()),
            f"the loss became non-finite at epoch {epoch}; training "
            f"stopped and kept the best epoch ({summary['best_epoch'] + 1})",
            float(non_finite.sum()),
            0,
            "lower",
            epoch,
        )
    ]
    finite = history[~non_finite]
    verdicts += _spikes(finite, judge)
    verdicts += _gradient_explosion(history, judge)
    rising = _rising(finite, judge)
    verdicts += rising
    # A loss that rose after its best has not plateaued: the rise is the verdict, and the plateau
    # keeps only its measure.
    plateau = _plateau(finite, judge)
    if fired(rising):
        plateau = [
            dataclasses.replace(v, fired=False, remedy="", overrides={}, rung="") for v in plateau
        ]
    verdicts += plateau
    verdicts += _premature_stop(finite, summary, judge)
    return verdicts


def _spikes(h: pd.DataFrame, judge: Judge) -> list[Verdict]:
    """An epoch's mean training loss above `spike_factor` x the lowest loss before it: the untrained
    model's (the first batch of epoch 1) or an earlier epoch's mean. Too large a step shows from the
    first epoch on, as a loss far above the untrained model's. Measure: the largest rise, as a
    share of |best before|."""
    if not len(h):
        return []
    factor = judge.settings.spike_factor
    loss = h["train_loss"].to_numpy()
    untrained = h["train_loss_first_batch"].iloc[0] if "train_loss_first_batch" in h else np.inf
    best_before = np.minimum.accumulate(np.r_[untrained, loss])[:-1]
    # On |best|: a loss that can be negative (or near 0) would make a plain ratio meaningless.
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where(np.isfinite(best_before), (loss - best_before) / np.abs(best_before), 0.0)
    i = int(np.argmax(rise))
    epoch = int(h["epoch"].iloc[i]) + 1
    return [
        judge(
            "loss_spike",
            bool(rise[i] > factor - 1),
            f"training loss {loss[i]:.4g} at epoch {epoch} against {best_before[i]:.4g} before "
            f"(> {factor:g}x)",
            float(rise[i]),
            factor - 1,
            "lower",
            epoch,
        )
    ]


def _gradient_explosion(h: pd.DataFrame, judge: Judge) -> list[Verdict]:
    """An epoch's largest gradient norm (before clipping) above `grad_norm_factor` x the median of
    the earlier epochs' largest norms, or non-finite. Largest against largest: within an epoch the
    heaviest batch is routinely 10-50x the median one. Measure: the largest such ratio."""
    if "grad_norm_max" not in h or not len(h):
        return []
    factor = judge.settings.grad_norm_factor
    peak = h["grad_norm_max"].to_numpy()
    ratios = []
    for i in range(len(h)):
        before = peak[:i][np.isfinite(peak[:i])]
        ratio = peak[i] / np.median(before) if len(before) >= 2 else 0.0
        ratios.append(np.inf if not math.isfinite(peak[i]) else ratio)
    i = int(np.argmax(ratios))
    epoch = int(h["epoch"].iloc[i]) + 1
    worst = float(min(ratios[i], np.finfo(np.float32).max))
    return [
        judge(
            "gradient_explosion",
            worst > factor,
            f"largest gradient norm {peak[i]:.3g} at epoch {epoch}, {worst:.3g}x the median "
            f"largest norm before (> {factor:g}x)",
            worst,
            factor,
            "lower",
            epoch,
        )
    ]


def _rising(h: pd.DataFrame, judge: Judge) -> list[Verdict]:
    """Validation loss above its best for `rising_epochs` epochs in a row after it, and by more than
    `rise_share` at the end: with the training loss rising too the steps are too large (the
    documents' "loss increased after epoch 5": rising_loss); with the training loss still falling
    the model overfits. A loss that only wavers above its best is neither. Measure: the final rise
    above the best, as a share of it."""
    settings, n = judge.settings, judge.settings.rising_epochs
    if len(h) <= n:
        return []
    val, train = h["val_loss"].to_numpy(), h["train_loss"].to_numpy()
    best = int(np.argmin(val))
    after = val[best + 1 :]
    rise = float((val[-1] - val[best]) / abs(val[best])) if val[best] else 0.0
    sustained = len(after) >= n and bool((after[:n] > val[best]).all())
    at = min(best + n, len(h) - 1)
    epoch = int(h["epoch"].iloc[at]) + 1
    evidence = (
        f"validation loss {val[best]:.4g} at epoch {best + 1}, "
        f"then above it for {len(after)} epochs "
        f"({val[-1]:.4g} at the end); training loss {train[best]:.4g} -> {train[at]:.4g}"
    )
    rose = sustained and rise > settings.rise_share
    training_rose = bool(train[at] - train[best] > 0)
    # Both judged on the one measure, so a remedy's run keeps it whichever way its training went.
    return [
        judge(name, rose and fires, evidence, rise, settings.rise_share, "lower", epoch)
        for name, fires in (("rising_loss", training_rose), ("overfitting", not training_rose))
    ]


def _plateau(h: pd.DataFrame, judge: Judge) -> list[Verdict]:
    """The last third of training improved the best validation loss by less than
    `plateau_improvement`; histories shorter than `plateau_min_epochs` are not judged. Measure: the
    improvement, as a share of the best before."""
    settings = judge.settings
    if len(h) < settings.plateau_min_epochs:
        return []
    third = len(h) // 3
    before, recent = h["val_loss"].iloc[: 2 * third].min(), h["val_loss"].iloc[2 * third :].min()
    improvement = float((before - recent) / abs(before)) if before else 0.0
    evidence = (
        f"best validation loss {before:.4g} -> {recent:.4g} "
        f"over the last {len(h) - 2 * third} epochs "
        f"(< {settings.plateau_improvement:.0%})"
    )
    if "lr" in h and h["lr"].iloc[-1] < settings.decayed_lr_share * judge.config.lr:
        evidence += f"; lr decayed {judge.config.lr:g} -> {h['lr'].iloc[-1]:.3g}"
    epoch = int(h["epoch"].iloc[2 * third]) + 1
    return [
        judge(
            "plateau",
            improvement < settings.plateau_improvement,
            evidence,
            improvement,
            settings.plateau_improvement,
            "higher",
            epoch,
        )
    ]


def _premature_stop(h: pd.DataFrame, summary: dict[str, Any], judge: Judge) -> list[Verdict]:
    """Early stopping before `premature_stop_share` of the epoch budget. Measure: the share of the
    budget run."""
    config, share = judge.config, judge.settings.premature_stop_share
    if config.patience is None:
        return []
    ran = summary["epochs_run"] / config.epochs
    return [
        judge(
            "premature_stop",
            bool(summary["stopped_early"]) and ran < share,
            f"early stopping after {summary['epochs_run']} of {config.epochs} epochs "
            f"(patience {config.patience}, best epoch {summary['best_epoch'] + 1})",
            ran,
            share,
            "higher",
            summary["epochs_run"],
        )
    ]


def collapse_verdict(
    name: str, h: pd.DataFrame, column: str, threshold: float, judge: Judge, what: str
) -> list[Verdict]:
    """A ratio to the data (a spread, a diversity) that ends training below `threshold`, judged on
    its median over the last `judge_epochs`; the epoch is the first of the final run below it."""
    if column not in h or not len(h):
        return []
    settings = judge.settings
    smoothed = h[column].rolling(settings.judge_epochs, min_periods=1).median()
    below = (smoothed < threshold).to_numpy()
    start = len(below) - int(np.argmin(below[::-1])) if not below.all() else 0
    epoch = int(h["epoch"].iloc[min(start, len(h) - 1)]) + 1
    return [
        judge(
            name,
            bool(smoothed.iloc[-1] < threshold),
            f"{what} {smoothed.iloc[-1]:.2f}x the data's at the end (median of the last "
            f"{min(settings.judge_epochs, len(h))} epochs; < {threshold:g}x since epoch {epoch})",
            float(smoothed.iloc[-1]),
            threshold,
            "higher",
            epoch,
        )
    ]
