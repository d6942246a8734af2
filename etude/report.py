"""The report: one self-contained HTML page (figures inlined) and a Markdown summary.

Variants side by side with their baselines, then each variant's part: how its training ended, the
verdicts its family draws, its metrics beside the baselines, training curves, the figures and
players its family contributes, its samples, and its MLflow runs with the parameters that differ
between them. Pieces that a stage could not use are listed with the stage's reason.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from etude import pipeline, tracking
from etude.diagnosis import Verdict
from etude.doctor import DOCTOR_JSON, summary_rows
from etude.family import Family, Results, Section
from etude.figures import audio_players, curves_figure
from etude.ingest import QUARANTINED, usable
from etude.models import family_named
from etude.params import Params
from etude.variants import read_config

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:right}"
    "tr:nth-child(even){background:#f4f4f4}img{max-width:100%}"
)


@dataclass
class Page:
    """The HTML body and the Markdown summary, written side by side."""

    html: list[str] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)

    def add(self, fragment: str, markdown: str = "") -> None:
        self.html.append(fragment)
        if markdown:
            self.markdown.append(markdown)

    def table(self, title: str, frame: pd.DataFrame, index: bool = True, level: int = 2) -> None:
        self.add(
            f"<h{level}>{html.escape(title)}</h{level}>{frame.to_html(border=0, index=index)}",
            f"{'#' * level} {title}\n\n{frame.to_markdown(index=index)}\n",
        )


def collect(params: Params) -> list[Results]:
    return [_results(name) for name in params.variants]


def _results(name: str) -> Results:
    def path(template: str, **extra: str) -> Path:
        return pipeline.path_for(template, name, **extra)

    return Results(
        name=name,
        history=pd.read_csv(path(pipeline.HISTORY)),
        train=json.loads(path(pipeline.TRAIN_METRICS).read_text()),
        evaluation=json.loads(path(pipeline.EVAL_METRICS).read_text()),
        generation=json.loads(path(pipeline.GENERATE_METRICS).read_text()),
        music=json.loads(path(pipeline.MUSIC_METRICS).read_text()),
        samples=pd.read_parquet(path(pipeline.SAMPLES_DIR) / "samples.parquet"),
        samples_dir=path(pipeline.SAMPLES_DIR),
        runs={
            stage: json.loads(path(pipeline.RUN_LINK, stage=stage).read_text())
            for stage in ("train", "evaluate", "generate")
        },
    )


def ending(result: Results) -> str:
    """How training ended."""
    t = result.train
    best = t["best_epoch"] + 1
    if t.get("diverged"):
        return f"diverged after epoch {t['epochs_run']} (published: best finite epoch {best})"
    if t["stopped_early"]:
        return f"early stop after epoch {t['epochs_run']} (best {best})"
    return f"ran its {t['epochs_run']} epochs (best {best})"


def verdicts_html(verdicts: list[Verdict]) -> str:
    """Each verdict with its evidence, and its remedy as a command to copy."""
    if not verdicts:
        return "<p><b>Diagnosis:</b> no pathology found.</p>"
    items = "".join(
        f"<li><b>{html.escape(v.name)}</b>{f' (epoch {v.epoch})' if v.epoch is not None else ''}: "
        f"{html.escape(v.evidence)}. <i>Remedy:</i> {html.escape(v.remedy)}"
        + (f"<br><code>{html.escape(v.command)}</code>" if v.command else "")
        + "</li>"
        for v in verdicts
    )
    return f"<p><b>Diagnosis:</b></p><ul>{items}</ul>"


def music_ranking(results: list[Results]) -> pd.DataFrame:
    """Every symbolic variant's sample groups by closeness to the test data, with the ceiling
    beside: training excerpts against the same test excerpts, what a perfect model would score.
    Ranked by the gap to the variant's ceiling (OA mean over the descriptors, higher is closer): the
    note models and the grid VAEs are judged on different excerpts, whose ceilings differ."""
    rows = []
    for result in results:
        ceiling = result.music.get("ceiling") or {}
        for group, scores in result.music["groups"].items():
            rows.append(
                {
                    "variant": result.name,
                    "group": group,
                    "samples": scores["count"],
                    "OA mean": scores["oa_mean"],
                    "KLD mean": scores["kld_mean"],
                    "ceiling OA": ceiling.get("oa_mean"),
                    "ceiling KLD": ceiling.get("kld_mean"),
                }
            )
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    table.insert(
        3, "OA gap to ceiling", table["ceiling OA"].astype(float) - table["OA mean"].astype(float)
    )
    return table.sort_values(
        ["OA gap to ceiling", "OA mean"], ascending=[True, False], ignore_index=True
    )


def comparisons(
    results: list[Results], families: dict[str, Family], configs: dict, params: Params
) -> dict[str, pd.DataFrame]:
    """The tables that compare variants of one kind (their families' `comparison`), by title."""
    rows: dict[str, dict[str, dict]] = {}
    for result in results:
        found = families[result.name].comparison(result, configs[result.name], params)
        if found is not None:
            title, row = found
            rows.setdefault(title, {})[result.name] = row
    return {title: pd.DataFrame(table).T for title, table in rows.items()}


def variant_metrics_table(result: Results, family: Family) -> pd.DataFrame:
    """One variant's test metrics beside its baselines and reference statistics, row by row."""
    groups = {k: v for k, v in result.evaluation.items() if k != "windows"}
    return pd.DataFrame(
        {family.group_labels.get(k, k.replace("_", " ")): pd.Series(v) for k, v in groups.items()}
    )


def runs_table(experiment: str, variant: str) -> pd.DataFrame:
    """MLflow train runs of a variant, the params that differ between them, and their test
    metrics."""
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"tags.variant = '{variant}' and tags.stage = 'train'",
        order_by=["attributes.start_time ASC"],
    )
    if runs.empty:
        return runs
    param_cols = [
        c for c in runs.columns if c.startswith("params.") and runs[c].nunique(dropna=False) > 1
    ]
    test_cols = [c for c in runs.columns if c.startswith("metrics.test.")]
    table = runs[
        [
            "run_id",
            "tags.config_hash",
            "tags.dvc_exp_name",
            "tags.runner",
            "status",
            "metrics.best_val_loss",
            "metrics.epochs_run",
            *param_cols,
            *test_cols,
        ]
    ].copy()
    table["run_id"] = table["run_id"].str[:8]
    return table.rename(columns=lambda c: c.split(".", 1)[1] if "." in c else c)


def _fmt(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.map(lambda v: "" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else v)


def listening(samples_dir: Path) -> str:
    """Every written sample's MP3 preview (and the test excerpts' beside them), a row per group:
    `t1.5_s0.mp3` plays in row t1.5, `prior.mp3` in row prior."""
    groups: dict[str, list[tuple[str, Path]]] = {}
    for mp3 in sorted(samples_dir.glob("*.mp3")):
        groups.setdefault(re.sub(r"_s\d+$", "", mp3.stem), []).append((mp3.stem, mp3))
    title = "Listen: the first seconds of each MIDI sample, and of test excerpts"
    return audio_players(groups, title) if groups else ""


def _sample_links(samples_dir: Path, html_path: Path) -> str:
    links = " ".join(
        f'<a href="{html.escape(_relative(path, html_path))}">{html.escape(path.stem)}</a>'
        for path in sorted(samples_dir.glob("*.mid"))
    )
    return f"<p>MIDI samples: {links}</p>" if links else ""


def add_variant(
    page: Page, result: Results, family: Family, config, params: Params, html_path: Path
) -> None:
    verdicts = [Verdict.from_dict(v) for v in result.train.get("diagnosis", [])]
    train_run = result.runs["train"]["run_id"]
    summary = (
        f"Training {ending(result)}; "
        f"best validation loss {result.train['best_val_loss']:.4f}; MLflow train "
        f"run `{train_run}`."
    )
    lines = "".join(f"- {v.line()}\n" for v in verdicts) or "- no pathology found\n"
    page.add(
        f"<h2>{result.name}</h2><p>{html.escape(summary)}</p>{verdicts_html(verdicts)}",
        f"## {result.name}\n\n{summary}\n\n**Diagnosis:**\n\n{lines}",
    )
    own = _fmt(variant_metrics_table(result, family))
    page.add(own.to_html(border=0), own.to_markdown() + "\n")
    page.add(curves_figure(result))
    sections: list[Section] = family.report_sections(result, config, params.report)
    for section in sections:
        page.add(section.html, section.markdown)
    page.add(listening(result.samples_dir))
    page.add(_sample_links(result.samples_dir, html_path))
    page.table(
        "Sample statistics",
        _fmt(pd.DataFrame([result.generation]).T.rename(columns={0: "value"})),
        level=3,
    )
    runs = runs_table(params.tracking.experiment, result.name)
    if runs.empty:
        page.add("<h3>MLflow runs of this variant</h3><p>none</p>")
    else:
        page.table("MLflow runs of this variant", _fmt(runs), index=False, level=3)


def data_line(params: Params, pieces: pd.DataFrame) -> str:
    kept = usable(pieces)
    return (
        f"{len(kept)} pieces ({kept['note_count'].sum()} notes, "
        f"{kept['duration'].sum() / 3600:.2f} h) "
        f"from `{params.data.source}`; {len(pieces) - len(kept)} quarantined. "
        f"Split: {kept['split'].value_counts().to_dict()}"
    )


def build(
    params: Params, pieces: pd.DataFrame, skipped: pd.DataFrame, html_path: Path, md_path: Path
) -> None:
    """Write the page and the summary. `skipped`: pieces a stage after ingest could not use
    (stage, piece, path, reason)."""
    results = collect(params)
    page = Page()
    line = data_line(params, pieces)
    page.add(f"<h1>etude report</h1><p>{html.escape(line)}</p>", f"# etude report\n\n{line}\n")
    configs = {r.name: read_config(pipeline.path_for(pipeline.CONFIG, r.name)) for r in results}
    families = {r.name: family_named(configs[r.name].model) for r in results}
    notes = "; ".join(dict.fromkeys(f"{f.name}: {f.baselines}" for f in families.values()))
    page.add(
        "<p>Each variant's section shows its metrics beside baselines it must beat "
        f"({html.escape(notes)}).</p>"
    )
    page.table(
        "Test-split metrics", _fmt(pd.DataFrame({r.name: r.evaluation["model"] for r in results}))
    )
    page.table(
        "Training",
        _fmt(
            pd.DataFrame(
                {
                    r.name: {k: v for k, v in r.train.items() if k != "measures"}
                    | {
                        "diagnosis": ", ".join(v["name"] for v in r.train.get("diagnosis", []))
                        or "healthy"
                    }
                    for r in results
                }
            )
        ),
    )
    for title, table in comparisons(results, families, configs, params).items():
        page.table(title, _fmt(table))
    ranking = music_ranking(results)
    if len(ranking):
        page.table(
            "Samples against the data (Yang & Lerch OA / KLD, metrics/<variant>/music.json)",
            _fmt(ranking),
            index=False,
        )
    remedies_tried(page, Path(DOCTOR_JSON))
    for result in results:
        add_variant(page, result, families[result.name], configs[result.name], params, html_path)
    quarantined = pieces[pieces["status"] == QUARANTINED][["path", "error"]]
    if len(quarantined):
        page.table("Quarantined files", quarantined, index=False)
    if len(skipped):
        page.table("Pieces skipped by a stage", skipped[["stage", "path", "reason"]], index=False)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>etude report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(page.html)}</body></html>\n"
    )
    md_path.write_text("\n".join(page.markdown))


def remedies_tried(page: Page, path: Path) -> None:
    """What `etude doctor` tried for each verdict: remedy, measure before -> after beside the seeds'
    noise, cleared or not, side effects, and the command that keeps it."""
    if not path.exists():
        line = "Remedies tried: none yet; `etude doctor` runs each verdict's remedy and judges it."
        page.add(f"<p>{html.escape(line)}</p>", line + "\n")
        return
    found = json.loads(path.read_text())
    rows = summary_rows(found)
    title = f"Remedies tried (etude doctor on the {found['parent']}'s run, {path})"
    if rows:
        page.table(title, pd.DataFrame(rows), index=False)
    else:
        page.add(f"<p>{html.escape(title)}: no verdicts to treat.</p>", f"{title}: none\n")


def _relative(target: Path, html_path: Path) -> str:
    return Path("../" * len(html_path.parent.parts)).joinpath(target).as_posix()
