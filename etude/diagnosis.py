"""Verdicts on the pathologies the documents debug by hand, each with its evidence and remedy.

A verdict names the pathology, the epoch it first showed, the numbers that show it, and the remedy
the documents prescribe as params overrides that `dvc exp run` takes as printed (`-S ++key=value`
sets a key whether or not the variant's entry has it). Training draws verdicts from its per-epoch
history (metrics/<V>/train.json, key `diagnosis`); the shared ones live here, each family adds its
own (`Family.diagnose`). Every threshold, and how far each remedy moves a setting, is a
`diagnosis:` param: changing one re-runs train, which finds its finished checkpoint and only
re-judges.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from etude.params import Diagnosis, Remedies


@dataclass(frozen=True)
class Verdict:
    name: str  # the pathology, snake_case
    evidence: str  # the numbers, in words
    remedy: str  # what the documents prescribe, in words
    overrides: dict[str, Any] = field(default_factory=dict)  # params path -> value
    epoch: int | None = None  # 1-based epoch it first showed; None: judged on the whole run

    @property
    def command(self) -> str:
        if not self.overrides:
            return ""
        return "dvc exp run " + " ".join(
            f"-S ++{key}={_literal(value)}" for key, value in self.overrides.items()
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"command": self.command}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Verdict:
        return cls(
            row["name"], row["evidence"], row["remedy"], row.get("overrides", {}), row.get("epoch")
        )

    def line(self) -> str:
        when = f" (epoch {self.epoch})" if self.epoch is not None else ""
        command = f" `{self.command}`" if self.command else ""
        return f"{self.name}{when}: {self.evidence}. Remedy: {self.remedy}{command}"


def _literal(value: Any) -> str:
    """A value as Hydra's override grammar reads it back with the same type."""
    if isinstance(value, float):
        return f"{value:.6g}" if "e" not in f"{value:.6g}" else repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def variant_key(variant: str, setting: str) -> str:
    """The params path of a variant's setting: a variant overrides its family's defaults."""
    return f"variants.{variant}.{setting}"


def changes(config, overrides: dict[str, Any]) -> str:
    """What overrides change, as a remedy's words say it:
    "lr 0.001 -> 0.0005, kl.beta 0.1 -> 0.05"."""
    parts = []
    for key, value in overrides.items():
        setting = key.split(".", 2)[2]  # variants.<variant>.<setting>
        now = config
        for name in setting.split("."):
            now = getattr(now, name)
        parts.append(f"{setting} {_literal(now)} -> {_literal(value)}")
    return ", ".join(parts)


def scaled(value: float, factor: float) -> float:
    """A setting's remedy value, to three significant digits as a user would type it."""
    return float(f"{value * factor:.3g}")


def raised(value: float, factor: float, floor: float) -> float:
    """A weight's remedy value: `factor` x larger, and at least `floor` (a weight of 0 stays 0 when
    only scaled)."""
    return max(scaled(value, factor), floor)


def first_epoch(flags: pd.Series, epochs: pd.Series) -> int | None:
    """The 1-based epoch of the first True in `flags`."""
    hits = np.flatnonzero(flags.to_numpy())
    return int(epochs.iloc[hits[0]]) + 1 if len(hits) else None


def recent(h: pd.DataFrame, column: str, settings: Diagnosis) -> float:
    """A sampled measure as judged: its median over the last `judge_epochs` epochs, as one epoch's
    few seeded samples swing it."""
    return float(h[column].iloc[-settings.judge_epochs :].median())


def lower_lr(config, remedies: Remedies, variant: str) -> dict[str, Any]:
    """The documents' fix for unstable training: a lower learning rate (0.005 -> 0.001), with
    gradient clipping where it was off."""
    overrides: dict[str, Any] = {variant_key(variant, "lr"): scaled(config.lr, remedies.lr_down)}
    if config.grad_clip is None:
        overrides[variant_key(variant, "grad_clip")] = remedies.grad_clip
    return overrides


def more_dropout(dropout: float, remedies: Remedies, variant: str) -> dict[str, Any]:
    """The usual remedy for overfitting, for a model with `dropout`:
    `variants.<variant>.dropout`."""
    if dropout >= remedies.dropout_max:
        return {}
    return {
        variant_key(variant, "dropout"): round(
            min(dropout + remedies.dropout_step, remedies.dropout_max), 2
        )
    }


def training_verdicts(
    history: pd.DataFrame,
    summary: dict[str, Any],
    config,
    settings: Diagnosis,
    regularize: dict[str, Any],
    variant: str,
) -> list[Verdict]:
    """The pathologies any training can show: non-finite loss, loss spikes, exploding gradients,
    loss rising mid-training (unstable) or only on validation (overfitting: `regularize` is the
    family's remedy), a plateau, and early stopping before the loss had settled."""
    verdicts = []
    epochs = history["epoch"]
    non_finite = ~np.isfinite(history[["train_loss", "val_loss"]]).all(axis=1)
    if non_finite.any():
        epoch = first_epoch(non_finite, epochs)
        verdicts.append(
            Verdict(
                "non_finite_loss",
                f"the loss became non-finite at epoch {epoch}; training "
                f"stopped and kept the best epoch ({summary['best_epoch'] + 1})",
                "a lower learning rate",
                lower_lr(config, settings.remedies, variant),
                epoch,
            )
        )
    finite = history[~non_finite]
    verdicts += _spikes(variant, finite, config, settings)
    verdicts += _gradient_explosion(variant, history, config, settings)
    rising = _rising(variant, finite, config, settings, regularize)
    # A loss that rose after its best has not plateaued: the rise is the verdict.
    verdicts += rising or _plateau(variant, finite, config, settings)
    verdicts += _premature_stop(variant, finite, summary, config, settings)
    return verdicts


def _spikes(variant: str, h: pd.DataFrame, config, settings: Diagnosis) -> list[Verdict]:
    """An epoch's mean training loss above `spike_factor` x the lowest loss before it: the untrained
    model's (the first batch of epoch 1) or an earlier epoch's mean. Too large a step shows from the
    first epoch on, as a loss far above the untrained model's."""
    if not len(h):
        return []
    loss = h["train_loss"].to_numpy()
    untrained = h["train_loss_first_batch"].iloc[0] if "train_loss_first_batch" in h else np.inf
    best_before = np.minimum.accumulate(np.r_[untrained, loss])[:-1]
    # On |best|: a loss that can be negative (or near 0) would make a plain ratio meaningless.
    spike = loss - best_before > (settings.spike_factor - 1) * np.abs(best_before)
    if not spike.any():
        return []
    i = int(np.flatnonzero(spike)[0])
    epoch = int(h["epoch"].iloc[i]) + 1
    evidence = f"training loss {loss[i]:.4g} at epoch {epoch} against {best_before[i]:.4g} before"
    return [
        Verdict(
            "loss_spike",
            f"{evidence} (> {settings.spike_factor:g}x)",
            "a lower learning rate",
            lower_lr(config, settings.remedies, variant),
            epoch,
        )
    ]


def _gradient_explosion(
    variant: str, h: pd.DataFrame, config, settings: Diagnosis
) -> list[Verdict]:
    """An epoch's largest gradient norm (before clipping) above `grad_norm_factor` x the median of
    the earlier epochs' largest norms, or non-finite. Largest against largest: within an epoch the
    heaviest batch is routinely 10-50x the median one."""
    if "grad_norm_max" not in h:
        return []
    peak = h["grad_norm_max"].to_numpy()
    for i in range(len(h)):
        before = peak[:i][np.isfinite(peak[:i])]
        exploded = not math.isfinite(peak[i]) or (
            len(before) >= 2 and peak[i] > settings.grad_norm_factor * np.median(before)
        )
        if exploded:
            epoch = int(h["epoch"].iloc[i]) + 1
            median = f"{np.median(before):.3g}" if len(before) else "n/a"
            return [
                Verdict(
                    "gradient_explosion",
                    f"largest gradient norm {peak[i]:.3g} at epoch {epoch} against a "
                    f"median largest norm of {median} before (> {settings.grad_norm_factor:g}x)",
                    "a lower learning rate (and gradient clipping)",
                    lower_lr(config, settings.remedies, variant),
                    epoch,
                )
            ]
    return []


def _rising(
    variant: str, h: pd.DataFrame, config, settings: Diagnosis, regularize: dict[str, Any]
) -> list[Verdict]:
    """Validation loss above its best for `rising_epochs` epochs in a row after it, and by more than
    `rise_share` at the end: with the training loss rising too the steps are too large (the
    documents' "loss increased after epoch 5": lower lr); with the training loss still falling the
    model overfits (more dropout). A loss that only wavers above its best is neither."""
    n = settings.rising_epochs
    if len(h) <= n:
        return []
    val, train = h["val_loss"].to_numpy(), h["train_loss"].to_numpy()
    best = int(np.argmin(val))
    after = val[best + 1 :]
    wavering = val[-1] - val[best] <= settings.rise_share * abs(val[best])
    if len(after) < n or not (after[:n] > val[best]).all() or wavering:
        return []
    epoch = int(h["epoch"].iloc[best + n]) + 1
    train_change = train[best + n] - train[best]
    evidence = (
        f"validation loss {val[best]:.4g} at epoch {best + 1}, "
        f"then above it for {len(after)} epochs "
        f"({val[-1]:.4g} at the end); training loss {train[best]:.4g} -> {train[best + n]:.4g}"
    )
    if train_change > 0:
        return [
            Verdict(
                "rising_loss",
                evidence,
                "a lower learning rate",
                lower_lr(config, settings.remedies, variant),
                epoch,
            )
        ]
    remedy = (
        ", ".join(f"{key.rsplit('.', 1)[-1]} {value}" for key, value in regularize.items())
        or "more data"
    )
    return [
        Verdict(
            "overfitting",
            evidence,
            f"regularisation: {remedy} (or fewer epochs: early stopping keeps the best)",
            regularize,
            epoch,
        )
    ]


def _plateau(variant: str, h: pd.DataFrame, config, settings: Diagnosis) -> list[Verdict]:
    """The last third of training improved the best validation loss by less than
    `plateau_improvement`; histories shorter than `plateau_min_epochs` are not judged. Remedy: with
    the learning rate decayed below `decayed_lr_share` of its start, a slower decay (the documents:
    0.95 every 5 epochs -> 0.98 every 8); otherwise a higher learning rate ("if training is too
    slow")."""
    remedies = settings.remedies
    if len(h) < settings.plateau_min_epochs:
        return []
    third = len(h) // 3
    before, recent = h["val_loss"].iloc[: 2 * third].min(), h["val_loss"].iloc[2 * third :].min()
    if before - recent >= abs(before) * settings.plateau_improvement:
        return []
    evidence = (
        f"best validation loss {before:.4g} -> {recent:.4g} "
        f"over the last {len(h) - 2 * third} epochs "
        f"(< {settings.plateau_improvement:.0%})"
    )
    epoch = int(h["epoch"].iloc[2 * third]) + 1
    if "lr" in h and h["lr"].iloc[-1] < settings.decayed_lr_share * config.lr:
        return [
            Verdict(
                "plateau",
                evidence + f"; lr decayed {config.lr:g} -> {h['lr'].iloc[-1]:.3g}",
                "a slower learning-rate decay",
                {
                    variant_key(variant, "lr_schedule.factor"): remedies.decay_factor,
                    variant_key(variant, "lr_schedule.every"): max(
                        remedies.decay_every, config.lr_schedule.every
                    ),
                },
                epoch,
            )
        ]
    return [
        Verdict(
            "plateau",
            evidence,
            "a higher learning rate",
            {variant_key(variant, "lr"): scaled(config.lr, remedies.lr_up)},
            epoch,
        )
    ]


def _premature_stop(
    variant: str, h: pd.DataFrame, summary: dict[str, Any], config, settings: Diagnosis
) -> list[Verdict]:
    """Early stopping before `premature_stop_share` of the epoch budget (the documents: patience 15
    stopped MelodyVAE at ~35 epochs, before timeshift had learned; 25 fixed it)."""
    if (
        not summary["stopped_early"]
        or summary["epochs_run"] >= settings.premature_stop_share * config.epochs
    ):
        return []
    patience, remedies = config.patience or 1, settings.remedies
    more = max(round(remedies.patience_factor * patience), patience + remedies.patience_add)
    return [
        Verdict(
            "premature_stop",
            f"early stopping after {summary['epochs_run']} of {config.epochs} epochs "
            f"(patience {config.patience}, best epoch {summary['best_epoch'] + 1})",
            "more patience",
            {variant_key(variant, "patience"): more},
            summary["epochs_run"],
        )
    ]


def collapse_verdict(
    name: str,
    variant: str,
    h: pd.DataFrame,
    column: str,
    threshold: float,
    settings: Diagnosis,
    what: str,
    remedy: str,
    overrides: dict[str, Any],
) -> list[Verdict]:
    """A ratio to the data (a spread, a diversity) that ends training below `threshold`, judged on
    its median over the last `judge_epochs`; the epoch is the first of the final run below it."""
    if column not in h or not len(h):
        return []
    smoothed = h[column].rolling(settings.judge_epochs, min_periods=1).median()
    if not smoothed.iloc[-1] < threshold:
        return []
    below = (smoothed < threshold).to_numpy()
    start = len(below) - int(np.argmin(below[::-1])) if not below.all() else 0
    epoch = int(h["epoch"].iloc[start]) + 1
    return [
        Verdict(
            name,
            f"{what} {smoothed.iloc[-1]:.2f}x the data's at the end (median of the last "
            f"{min(settings.judge_epochs, len(h))} epochs; < {threshold:g}x since epoch {epoch})",
            remedy,
            overrides,
            epoch,
        )
    ]
