"""The DAG, once: every stage's command, dependencies, outputs and parameter keys.

dvc.yaml is rendered from this table (`python -m etude.pipeline` writes it, `--check` verifies it)
and the Snakefile builds its rules from it, so the two runners cannot drift apart.

Per-variant stages depend on `configs/<variant>.json`, the variant's effective configuration,
written by `configure@<variant>`, not on params directly: changing the shared `lr` re-runs every
configure stage (cheap), but only variants whose effective configuration changed retrain. They also
depend on the source files their family declares (etude.family.Family.code_files), the same files
whose hash names the checkpoint folder.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from etude.family import SHARED_CODE
from etude.models import families, family_named
from etude.params import TRAINING_KEYS, Params
from etude.variants import load, variant_config

RAW = "data/raw/midi.parquet"
NOTES = "data/ingest/notes.parquet"
PIECES = "data/ingest/pieces.parquet"
NOTE_SEQUENCES = "data/tokens/notes.npz"
GRIDS = "data/tokens/{representation}.npz"
GRID_KINDS = ("rhythm", "melody")
MEL = "data/mel"
# What a family may read (Family.representation), by name.
REPRESENTATIONS = {
    "notes": NOTE_SEQUENCES,
    **{k: GRIDS.format(representation=k) for k in GRID_KINDS},
    "mel": MEL,
}

CONFIG = "configs/{variant}.json"
MODEL_DIR = "models/{variant}"
HISTORY = "metrics/{variant}/history.csv"
TRAIN_METRICS = "metrics/{variant}/train.json"
EVAL_METRICS = "metrics/{variant}/eval.json"
GENERATE_METRICS = "metrics/{variant}/generate.json"
MUSIC_METRICS = "metrics/{variant}/music.json"
SAMPLES_DIR = "samples/{variant}"
RUN_LINK = "runs/{stage}/{variant}.json"
REPORT_HTML = "reports/index.html"
REPORT_MD = "reports/summary.md"
INPUT = "{input}"  # the representation the variant reads: variant_input()
FAMILY_CODE = "{family_code}"  # the family's declared source files: family_code()
ALL_FAMILIES = "{all_families}"  # every family's own code: the report draws each family's sections


@dataclass(frozen=True)
class Stage:
    name: str
    code: tuple[str, ...]  # source files beyond stages/<name>.py whose change re-runs the stage
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()  # small JSON, kept in git (cache: false) for `dvc exp show`
    plots: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    per_variant: bool = False
    # Report reads whole folders in DVC; Snakemake needs the files: these are expanded per variant.
    variant_inputs: tuple[str, ...] = ()

    @property
    def script(self) -> str:
        return f"stages/{self.name}.py"

    @property
    def cmd(self) -> str:
        return f"python -m stages.{self.name}" + (
            " --variant {variant}" if self.per_variant else ""
        )

    def all_outs(self) -> tuple[str, ...]:
        return self.outs + self.metrics + self.plots


def _run_link(stage: str) -> str:
    return RUN_LINK.replace("{stage}", stage)


VARIANT_RESULTS = (
    HISTORY,
    TRAIN_METRICS,
    EVAL_METRICS,
    GENERATE_METRICS,
    MUSIC_METRICS,
    SAMPLES_DIR,
    _run_link("train"),
    _run_link("evaluate"),
    _run_link("generate"),
)
STAGES: tuple[Stage, ...] = (
    Stage("fetch", code=("etude/sources.py",), outs=(RAW,), params=("data",)),
    Stage(
        "ingest", code=("etude/ingest.py",), deps=(RAW,), outs=(NOTES, PIECES), params=("ingest",)
    ),
    Stage(
        "tokenize",
        code=("etude/sequences.py", "etude/skips.py"),
        deps=(NOTES, PIECES),
        outs=(NOTE_SEQUENCES,),
        params=("tokenize",),
    ),
    Stage(
        "grids",
        code=("etude/grids.py", "etude/skips.py"),
        deps=(NOTES, PIECES),
        outs=tuple(REPRESENTATIONS[k] for k in GRID_KINDS),
        params=("grid",),
    ),
    Stage(
        "mel",
        code=("etude/mel.py", "etude/audio.py", "etude/skips.py"),
        deps=(RAW, PIECES),
        outs=(MEL,),
        params=("audio", "mel"),
    ),
    # configure also checks that every split can serve the variant, before any training.
    Stage(
        "configure",
        code=("etude/params.py", "etude/variants.py", FAMILY_CODE),
        deps=(INPUT,),
        outs=(CONFIG,),
        params=(*TRAINING_KEYS, "models.{model}", "variants.{variant}"),
        per_variant=True,
    ),
    # diagnosis.py judges a finished history and serving.py logs the published model with the
    # `generate:` settings it answers with: a change to either re-runs train, which resumes its
    # finished checkpoint (named by the family's code alone), judges and logs again.
    Stage(
        "train",
        code=(FAMILY_CODE, "etude/diagnosis.py", "etude/serving.py"),
        deps=(CONFIG, INPUT),
        outs=(MODEL_DIR, _run_link("train")),
        metrics=(TRAIN_METRICS,),
        plots=(HISTORY,),
        params=("diagnosis", "generate"),
        per_variant=True,
    ),
    Stage(
        "evaluate",
        code=(FAMILY_CODE,),
        deps=(CONFIG, INPUT, MODEL_DIR, PIECES),  # pieces: the test split, as MLflow's dataset
        outs=(_run_link("evaluate"),),
        metrics=(EVAL_METRICS,),
        params=("evaluate", "data"),
        per_variant=True,
    ),
    # Written MIDI samples are also rendered to MP3 previews for the report.
    Stage(
        "generate",
        code=(FAMILY_CODE, "etude/music.py", "etude/listen.py", "etude/audio.py"),
        deps=(CONFIG, INPUT, MODEL_DIR, PIECES),
        outs=(SAMPLES_DIR, _run_link("generate")),
        metrics=(GENERATE_METRICS, MUSIC_METRICS),
        params=("generate", "audio", "report.audio", "data"),
        per_variant=True,
    ),
    Stage(
        "report",
        code=(
            "etude/report.py",
            "etude/doctor.py",
            "etude/figures.py",
            "etude/listen.py",
            ALL_FAMILIES,
        ),
        deps=(
            "metrics",
            "samples",
            "runs",
            PIECES,
            NOTE_SEQUENCES,
            *(REPRESENTATIONS[k] for k in GRID_KINDS),
            MEL,
        ),
        outs=(REPORT_HTML, REPORT_MD),
        params=("report",),
        variant_inputs=VARIANT_RESULTS,
    ),
)


def path_for(template: str, variant: str, **extra: str) -> Path:
    return Path(template.format(variant=variant, **extra))


def is_directory(path: str) -> bool:
    """Outputs without a suffix (models/<v>, samples/<v>, data/mel) are folders."""
    return Path(path).suffix == ""


def variant_input(config) -> str:
    """The representation file or folder a variant reads."""
    return REPRESENTATIONS[family_named(config.model).representation(config)]


def family_code(config) -> tuple[str, ...]:
    return family_named(config.model).code_files()


def all_family_modules() -> tuple[str, ...]:
    """Every family's own code: the report draws the sections each family defines there."""
    return tuple(sorted({path for f in families().values() for path in f.own_code()}))


def expand(templates: tuple[str, ...], params: Params, variant: str | None) -> list[str]:
    """A stage's templates with the variant's values; list placeholders become several paths."""
    out: list[str] = []
    for template in templates:
        if template == ALL_FAMILIES:
            out += all_family_modules()
        elif template == FAMILY_CODE:
            out += family_code(variant_config(params, variant))
        elif variant is not None:
            config = variant_config(params, variant)
            out.append(
                template.format(variant=variant, model=config.model, input=variant_input(config))
            )
        else:
            out.append(template)
    return list(dict.fromkeys(out))


def stage_inputs(stage: Stage, params: Params, variant: str | None) -> list[str]:
    """Every file a stage (for one variant) depends on: its script, code and data."""
    return expand((stage.script, *stage.code, *stage.deps), params, variant)


# ---- dvc.yaml ------------------------------------------------------------------------------------
def _dvc(text: str) -> str:
    return (
        text.replace("{variant}", "${key}")
        .replace("{model}", "${item.model}")
        .replace("{input}", "${item.input}")
    )


def _dvc_items(params: Params) -> tuple[dict, int]:
    """foreach items: model, input and the family's own code files as code_0 … code_{n-1}. DVC
    cannot splice a list into `deps`, so every item gets n slots; shorter lists repeat their
    module."""
    codes = {
        name: family_named(params.variants[name]["model"]).own_code() for name in params.variants
    }
    slots = max(len(c) for c in codes.values())
    items = {}
    for name, cfg in params.variants.items():
        code = list(codes[name]) + [codes[name][-1]] * (slots - len(codes[name]))
        items[name] = {
            "model": cfg["model"],
            "input": variant_input(variant_config(params, name)),
            **{f"code_{i}": path for i, path in enumerate(code)},
        }
    return items, slots


def _dvc_deps(stage: Stage, slots: int) -> list[str]:
    deps = [stage.script]
    for path in (*stage.code, *stage.deps):
        if path == FAMILY_CODE:
            deps += [*SHARED_CODE, *(f"${{item.code_{i}}}" for i in range(slots))]
        elif path == ALL_FAMILIES:
            deps += all_family_modules()
        else:
            deps.append(_dvc(path))
    return list(dict.fromkeys(deps))


def render_dvc(params: Params) -> str:
    """dvc.yaml for these params: one foreach entry per variant."""
    items, slots = _dvc_items(params)
    stages = {}
    for stage in STAGES:
        body: dict = {"cmd": _dvc(stage.cmd), "deps": _dvc_deps(stage, slots)}
        if stage.params:
            body["params"] = [_dvc(p) for p in stage.params]
        body["outs"] = [_dvc(o) for o in stage.outs]
        if stage.metrics:
            body["metrics"] = [{_dvc(m): {"cache": False}} for m in stage.metrics]
        if stage.plots:
            body["plots"] = [
                {_dvc(p): {"cache": False, "x": "epoch", "y": "val_loss"}} for p in stage.plots
            ]
        stages[stage.name] = (
            {"foreach": copy.deepcopy(items), "do": body} if stage.per_variant else body
        )
    # One chart comparing every variant's validation loss (stage-level plots take a single y).
    curves = {HISTORY.format(variant=name): "val_loss" for name in items}
    plots = [{"val_loss_by_variant": {"x": "epoch", "y": curves, "template": "linear"}}]
    header = (
        "# Rendered from etude/pipeline.py by `python -m etude.pipeline`; do not edit by hand.\n"
    )
    return header + yaml.safe_dump(
        {"stages": stages, "plots": plots}, sort_keys=False, default_flow_style=False, width=120
    )


# ---- Snakemake -----------------------------------------------------------------------------------
def param_values(stage: Stage, params: Params, variant: str | None) -> str:
    """What a stage's result depends on among params, as one string: Snakemake's params trigger."""
    if stage.name == "configure":
        values = variant_config(params, variant).model_dump(mode="json")
    else:
        values = {
            key: functools.reduce(getattr, key.split("."), params).model_dump(mode="json")
            for key in stage.params
        }
    return json.dumps(values, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Render dvc.yaml from the stage table and params.yaml."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is not up to date")
    args = parser.parse_args()
    text = render_dvc(load())
    target = Path("dvc.yaml")
    if args.check:
        if not target.exists() or target.read_text() != text:
            sys.exit(
                "dvc.yaml is out of date with etude/pipeline.py and params.yaml: "
                "run `python -m etude.pipeline`"
            )
        return
    target.write_text(text)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
