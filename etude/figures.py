"""Figures and players for the report, as self-contained HTML fragments (images and audio
inlined)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from etude.family import Results


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return (
        f'<img alt="figure" src="data:image/png;base64,'
        f'{base64.b64encode(buf.getvalue()).decode()}">'
    )


def embedded_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def curves_figure(result: Results) -> str:
    """Train and validation curves of every loss term, and the learning rate."""
    history = result.history
    loss_columns = [
        c for c in history.columns if c.startswith(("train_", "val_")) and c.endswith("loss")
    ]
    heads = sorted({c.split("_", 1)[1] for c in loss_columns}, key=lambda h: (h != "loss", h))
    fig, axes = plt.subplots(1, len(heads) + 1, figsize=(3.2 * (len(heads) + 1), 2.6))
    for ax, head in zip(axes, heads):
        for split in ("train", "val"):
            ax.plot(history["epoch"] + 1, history[f"{split}_{head}"], label=split)
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    axes[0].legend(fontsize=7)
    axes[-1].plot(history["epoch"] + 1, history["lr"], color="gray")
    axes[-1].set_title("learning rate", fontsize=9)
    axes[-1].set_yscale("log")
    fig.suptitle(result.name, fontsize=10, y=1.04)
    return png(fig)


def piano_roll_figure(result: Results, seconds: float, first_sample_only: bool) -> str:
    """One panel per sample group (temperature, prior, sweep, interpolation): its first sample, or
    the whole group played back to back."""
    samples = result.samples
    groups = list(dict.fromkeys(samples["group"]))
    fig, axes = plt.subplots(
        1, len(groups), figsize=(3.4 * len(groups), 2.6), sharey=True, squeeze=False
    )
    for ax, group in zip(axes[0], groups):
        notes = samples[samples["group"] == group]
        if first_sample_only:
            notes = notes[notes["sample"] == 0]
        notes = notes[notes["start"] - notes["start"].min() < seconds]
        start = notes["start"] - notes["start"].min()
        ax.barh(
            notes["pitch"], (notes["end"] - notes["start"]).clip(lower=0.02), left=start, height=0.8
        )
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("seconds", fontsize=8)
    fig.suptitle(f"{result.name}: samples", fontsize=10, y=1.04)
    return png(fig)


def latent_figure(name: str, latent: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(4, 3.4))
    points = ax.scatter(latent["z0"], latent["z1"], c=latent["onset_density"], s=6, cmap="viridis")
    fig.colorbar(points, ax=ax, label="onsets per window")
    ax.set_xlabel("z0 (mu)")
    ax.set_ylabel("z1 (mu)")
    ax.set_title(f"{name}: test windows in the latent plane", fontsize=9)
    return png(fig)


def audio_player(label: str, mp3: Path | bytes) -> str:
    """One MP3 clip (a file, or its bytes) as an inline player with its caption. preload="none": a
    page of many players decodes only the one played."""
    data = base64.b64encode(mp3.read_bytes() if isinstance(mp3, Path) else mp3).decode()
    return (
        '<figure style="display:inline-block;margin:4px">'
        f"<figcaption>{html.escape(label)}</figcaption>"
        f'<audio controls preload="none" src="data:audio/mpeg;base64,{data}"></audio></figure>'
    )


def audio_players(groups: Mapping[str, Sequence[tuple[str, Path | bytes]]], title: str) -> str:
    """MP3 clips as inline players, a row per group: {group: [(label, mp3 file or bytes), ...]}."""
    rows = "".join(
        f"<h4>{html.escape(group)}</h4>" + "".join(audio_player(label, mp3) for label, mp3 in clips)
        for group, clips in groups.items()
    )
    return f"<h3>{html.escape(title)}</h3>{rows}"
