# The same DAG as dvc.yaml, built from the one stage table in etude/pipeline.py.
# Run: snakemake --cores 2      (a cluster: add --workflow-profile profiles/slurm)
import os

from etude.variants import load
from etude.pipeline import REPORT_HTML, REPORT_MD, STAGES, expand, is_directory, param_values, stage_inputs

PARAMS = load()  # the typed loader: YAML 1.2 numbers, unknown keys rejected before any work
VARIANTS = list(PARAMS.variants)
os.environ["ETUDE_RUNNER"] = "snakemake"  # jobs inherit it; MLflow runs are tagged with their runner

wildcard_constraints:
    variant="|".join(VARIANTS),


onstart:
    # Create and migrate the MLflow store once, before jobs use it in parallel.
    shell("python -m etude.tracking")


rule all:
    default_target: True
    input:
        REPORT_HTML,
        REPORT_MD,


def _inputs(stage):
    if stage.per_variant:
        return lambda wc: stage_inputs(stage, PARAMS, wc.variant)
    # DVC reads the report's inputs as whole folders; Snakemake needs the files inside them.
    folders = ("metrics", "samples", "runs")
    fixed = [path for path in stage_inputs(stage, PARAMS, None) if path not in folders]
    return fixed + [path for v in VARIANTS for path in expand(stage.variant_inputs, PARAMS, v)]


def _outputs(stage):
    return [directory(o) if is_directory(o) else o for o in stage.all_outs()]


for stage in STAGES:

    rule:
        name:
            stage.name
        input:
            _inputs(stage)
        output:
            _outputs(stage)
        params:
            # Bound now, through default arguments: a rule body reads loop variables only later.
            cmd=lambda wc, s=stage: s.cmd.format(variant=wc.get("variant")),
            values=(lambda wc, s=stage: param_values(s, PARAMS, wc.variant))
            if stage.per_variant
            else param_values(stage, PARAMS, None),
        shell:
            "{params.cmd}"
