# The same DAG as dvc.yaml, built from the one stage table in etude/pipeline.py.
# Run: snakemake --cores 2      (a cluster: add --workflow-profile profiles/slurm)
import os

from etude.params import load
from etude.pipeline import REPORT_HTML, REPORT_MD, STAGES, fill, is_directory, param_values

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
    code = [stage.script, *stage.code]
    if stage.per_variant:
        return lambda wc: [fill(d, PARAMS, wc.variant) for d in code + list(stage.deps)]
    per_variant = [fill(t, PARAMS, v) for t in stage.variant_inputs for v in VARIANTS]
    fixed = [d for d in stage.deps if d not in ("metrics", "samples", "runs")]
    return code + fixed + per_variant


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
