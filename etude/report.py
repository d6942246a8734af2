"""The report: one self-contained HTML page (figures inlined) and a Markdown summary.

Variants side by side with their baselines, training curves, piano rolls of samples linked to
their MIDI files, and, per variant, the MLflow runs with the parameters that differ between them.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from etude import pipeline, tracking  # noqa: E402
from etude.ingest import QUARANTINED  # noqa: E402
from etude.params import Params, read_variant_config  # noqa: E402


@dataclass
class VariantResults:
    name: str
    history: pd.DataFrame
    train: dict
    evaluation: dict
    generation: dict
    samples: pd.DataFrame
    runs: dict[str, dict]


def collect(params: Params) -> list[VariantResults]:
    results = []
    for name in params.variants:
        p = lambda template, **kw: pipeline.path_for(template, name, **kw)  # noqa: E731
        results.append(VariantResults(
            name=name,
            history=pd.read_csv(p(pipeline.HISTORY)),
            train=json.loads(p(pipeline.TRAIN_METRICS).read_text()),
            evaluation=json.loads(p(pipeline.EVAL_METRICS).read_text()),
            generation=json.loads(p(pipeline.GENERATE_METRICS).read_text()),
            samples=pd.read_parquet(p(pipeline.SAMPLES_DIR) / "samples.parquet"),
            runs={stage: json.loads(p(pipeline.RUN_LINK, stage=stage).read_text())
                  for stage in ("train", "evaluate", "generate")},
        ))
    return results


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def curves_figure(result: VariantResults) -> str:
    loss_columns = [c for c in result.history.columns if c.startswith(("train_", "val_")) and c.endswith("loss")]
    heads = sorted({c.split("_", 1)[1] for c in loss_columns}, key=lambda h: (h != "loss", h))
    fig, axes = plt.subplots(1, len(heads) + 1, figsize=(3.2 * (len(heads) + 1), 2.6))
    for ax, head in zip(axes, heads):
        for split in ("train", "val"):
            ax.plot(result.history["epoch"] + 1, result.history[f"{split}_{head}"], label=split)
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    axes[0].legend(fontsize=7)
    axes[-1].plot(result.history["epoch"] + 1, result.history["lr"], color="gray")
    axes[-1].set_title("learning rate", fontsize=9)
    axes[-1].set_yscale("log")
    fig.suptitle(result.name, fontsize=10, y=1.04)
    return _png(fig)


def piano_roll_figure(result: VariantResults, seconds: float) -> str:
    """One panel per sample group (temperature, prior, sweep, interpolation): its first sample,
    or for grid VAEs the whole group played back to back."""
    groups = list(dict.fromkeys(result.samples["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 2.6), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        notes = result.samples[result.samples["group"] == group]
        if "temperature" in notes:
            notes = notes[notes["sample"] == 0]
        notes = notes[notes["start"] - notes["start"].min() < seconds]
        start = notes["start"] - notes["start"].min()
        ax.barh(notes["pitch"], (notes["end"] - notes["start"]).clip(lower=0.02), left=start, height=0.8)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("seconds", fontsize=8)
    fig.suptitle(f"{result.name}: samples", fontsize=10, y=1.04)
    return _png(fig)


def _png_file(path: Path) -> str:
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def audio_players(result: VariantResults, samples_dir: Path) -> str:
    """Every rendered clip as an inline player (the page stays self-contained)."""
    cells = []
    for group, rows in result.samples.groupby("group", sort=False):
        players = "".join(
            f'<figure style="display:inline-block;margin:4px"><figcaption>{html.escape(row.file)}</figcaption>'
            f'<audio controls preload="none" src="data:audio/wav;base64,'
            f'{base64.b64encode((samples_dir / row.file).read_bytes()).decode()}"></audio></figure>'
            for row in rows.itertuples())
        cells.append(f"<h4>{html.escape(group)}</h4>{players}")
    return "<h3>Audio (Griffin-Lim)</h3>" + "".join(cells)


def latent_figure(result: VariantResults, latent: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(4, 3.4))
    points = ax.scatter(latent["z0"], latent["z1"], c=latent["onset_density"], s=6, cmap="viridis")
    fig.colorbar(points, ax=ax, label="onsets per window")
    ax.set_xlabel("z0 (mu)")
    ax.set_ylabel("z1 (mu)")
    ax.set_title(f"{result.name}: test windows in the latent plane", fontsize=9)
    return _png(fig)


def diagnosis(result: VariantResults, config, plateau_improvement: float) -> str:
    """One line: how training ended, and the pathologies the documents describe. A plateau: the
    last third of training improved the best validation loss by less than `plateau_improvement`."""
    h, t = result.history, result.train
    parts = [f"early stop after epoch {t['epochs_run']} (best {t['best_epoch'] + 1})" if t["stopped_early"]
             else f"ran its {t['epochs_run']} epochs (best {t['best_epoch'] + 1})"]
    third = max(len(h) // 3, 1)
    if len(h) >= 6:
        before, recent = h["val_loss"].iloc[: 2 * third].min(), h["val_loss"].iloc[2 * third :].min()
        if before - recent < abs(before) * plateau_improvement:
            parts.append(f"plateau: validation loss {before:.4g} -> {recent:.4g} over the last {len(h) - 2 * third} epochs")
    if "timeshift_variance" in h:
        annealed = h[h["epoch"] >= config.kl.start_epoch + config.kl.anneal_epochs]
        final = h["timeshift_variance"].iloc[-1]
        if len(annealed) and (annealed["timeshift_variance"] < config.collapse_variance).any():
            parts.append(f"WARNING timeshift collapse: decoded variance {final:.4f} < {config.collapse_variance} after KL annealing")
    if "val_featureless_share" in h:
        last = h.iloc[-1]
        parts.append(f"validation outputs in [{last['val_output_min']:.2f}, {last['val_output_max']:.2f}] "
                     f"for inputs in [{last['val_input_min']:.2f}, {last['val_input_max']:.2f}]")
        if last["val_featureless_share"] > 0:
            parts.append(f"WARNING {last['val_featureless_share']:.0%} featureless (blank) reconstructions")
    prior, test = result.evaluation.get("prior_samples", {}), result.evaluation.get("test_data", {})
    if "time_variation_db" in prior and prior["time_variation_db"] < 0.5 * test["time_variation_db"]:
        parts.append(f"WARNING prior samples are flat (change over time {prior['time_variation_db']:.1f} dB vs "
                     f"{test['time_variation_db']:.1f} dB in the "
                     f"test data): z ~ N(0, I) decodes off the data (KL {result.evaluation['model']['kl']:.0f} nats); "
                     "a larger beta or KL annealing narrows the gap")
    if "val_active_units" in h:
        units = h["val_active_units"].iloc[-1]
        parts.append(f"active units {units:.0f}/{config.latent_dim}" + (" (posterior collapse)" if units == 0 else ""))
    return "; ".join(parts)


BASELINE_LABELS = {"repeat_last": "repeat last pitch"}


def metrics_table(results: list[VariantResults]) -> pd.DataFrame:
    """Every variant's test metrics side by side (blank where a family has no such metric)."""
    return pd.DataFrame({r.name: r.evaluation["model"] for r in results})


def variant_metrics_table(result: VariantResults) -> pd.DataFrame:
    """One variant's test metrics beside its baselines and reference statistics, row by row."""
    groups = {k: v for k, v in result.evaluation.items() if k != "windows"}
    return pd.DataFrame({BASELINE_LABELS.get(k, k.replace("_", " ")): pd.Series(v) for k, v in groups.items()})


def training_table(results: list[VariantResults]) -> pd.DataFrame:
    return pd.DataFrame({r.name: r.train for r in results})


def runs_table(experiment: str, variant: str) -> pd.DataFrame:
    """MLflow train runs of a variant, the params that differ between them, and their test metrics."""
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    runs = mlflow.search_runs(experiment_names=[experiment],
                              filter_string=f"tags.variant = '{variant}' and tags.stage = 'train'",
                              order_by=["attributes.start_time ASC"])
    if runs.empty:
        return runs
    evals = mlflow.search_runs(experiment_names=[experiment],
                               filter_string=f"tags.variant = '{variant}' and tags.stage = 'evaluate'",
                               order_by=["attributes.start_time DESC"]).drop_duplicates("tags.config_hash")
    param_cols = [c for c in runs.columns if c.startswith("params.") and runs[c].nunique(dropna=False) > 1]
    table = runs[["run_id", "tags.config_hash", "tags.dvc_exp_name", "tags.runner", "status",
                  "metrics.best_val_loss", "metrics.epochs_run", *param_cols]].copy()
    metric_cols = [c for c in evals.columns if c.startswith("metrics.model.")]
    table = table.merge(evals[["tags.config_hash", *metric_cols]], on="tags.config_hash", how="left")
    table["run_id"] = table["run_id"].str[:8]
    return table.rename(columns=lambda c: c.split(".", 1)[1] if "." in c else c)


def _fmt(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.map(lambda v: "" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else v)


def build(params: Params, pieces: pd.DataFrame, html_path: Path, md_path: Path) -> None:
    results = collect(params)
    metrics = _fmt(metrics_table(results))
    training = _fmt(training_table(results))
    quarantined = pieces[pieces["status"] == QUARANTINED][["path", "error"]]
    usable = pieces[pieces["status"] != QUARANTINED]
    data_line = (f"{len(usable)} pieces ({usable['note_count'].sum()} notes, "
                 f"{usable['duration'].sum() / 3600:.2f} h) from `{params.data.source}`; "
                 f"{len(quarantined)} quarantined. Split: {usable['split'].value_counts().to_dict()}")

    body = [f"<h1>etude report</h1><p>{html.escape(data_line)}</p>",
            "<h2>Test-split metrics</h2>",
            "<p>Each variant's section shows its metrics beside baselines it must beat: for note RNNs "
            "unigram pitch frequencies, the training median (MAE) and mean (RMSE) of step and duration, "
            "and repeating the last pitch; for grid VAEs an all-empty grid and the training mean of "
            "velocity and timeshift; for spectral VAEs the per-bin mean spectrum of the training split.</p>",
            metrics.to_html(border=0), "<h2>Training</h2>", training.to_html(border=0)]
    md = [f"# etude report\n\n{data_line}\n\n## Test-split metrics\n\n{metrics.to_markdown()}\n\n"
          f"## Training\n\n{training.to_markdown()}\n"]
    for r in results:
        config = read_variant_config(pipeline.path_for(pipeline.CONFIG, r.name))
        samples_dir = pipeline.path_for(pipeline.SAMPLES_DIR, r.name)
        gen = _fmt(pd.DataFrame([r.generation]).T.rename(columns={0: "value"}))
        links = " ".join(f'<a href="{html.escape(_relative(path, html_path))}">{html.escape(path.stem)}</a>'
                         for path in sorted(samples_dir.glob("*.mid")))
        runs = runs_table(params.tracking.experiment, r.name)
        line = diagnosis(r, config, params.report.plateau_improvement)
        own = _fmt(variant_metrics_table(r))
        figures = [curves_figure(r)]
        if "pitch" in r.samples:
            figures.append(piano_roll_figure(r, params.report.piano_roll_seconds))
        if (samples_dir / "latent.parquet").exists():
            figures.append(latent_figure(r, pd.read_parquet(samples_dir / "latent.parquet")))
        # Figures a family draws itself (spectrogram images), then its audio.
        figures += [_png_file(path) for path in sorted(samples_dir.glob("*.png"))]
        if "file" in r.samples and r.samples["file"].str.endswith(".wav").any():
            figures.append(audio_players(r, samples_dir))
        audio_line = ""
        if (samples_dir / "audio_sources.json").exists():
            hours = json.loads((samples_dir / "audio_sources.json").read_text())
            audio_line = "Audio used: " + ", ".join(f"{source} ({seconds / 3600:.2f} h)" for source, seconds in hours.items())
        body += [f"<h2>{r.name}</h2>", f"<p><b>Diagnosis:</b> {html.escape(line)}. Best validation loss "
                 f"{r.train['best_val_loss']:.4f}; MLflow train run <code>{r.runs['train']['run_id']}</code>.</p>",
                 f"<p>{html.escape(audio_line)}</p>" if audio_line else "", own.to_html(border=0), *figures,
                 f"<p>MIDI samples: {links}</p>" if links else "", "<h3>Sample statistics</h3>", gen.to_html(border=0),
                 "<h3>MLflow runs of this variant</h3>",
                 _fmt(runs).to_html(border=0, index=False) if not runs.empty else "<p>none</p>"]
        md += [f"## {r.name}\n\n**Diagnosis:** {line}.\n\n{audio_line}\n\n{own.to_markdown()}\n\n### MLflow runs\n\n"
               + (_fmt(runs).to_markdown(index=False) if not runs.empty else "none") + "\n"]
    if len(quarantined):
        body += ["<h2>Quarantined files</h2>", quarantined.to_html(border=0, index=False)]
        md += [f"## Quarantined files\n\n{quarantined.to_markdown(index=False)}\n"]

    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:right}"
             "tr:nth-child(even){background:#f4f4f4}img{max-width:100%}")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>etude report</title>"
                         f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    md_path.write_text("\n".join(md))


def _relative(target: Path, html_path: Path) -> str:
    return Path("../" * len(html_path.parent.parts)).joinpath(target).as_posix()
