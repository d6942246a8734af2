"""dvc.yaml and the Snakefile describe the same DAG, checked with both real tools."""

import re

from dvc.repo import Repo

from etude.variants import load
from tests.conftest import REPO, make_project, run


def test_dvc_yaml_is_rendered_from_the_stage_table():
    run(["python", "-m", "etude.pipeline", "--check"], REPO)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def test_dvc_and_snakemake_have_the_same_stages_commands_and_files(tmp_path):
    project = make_project(tmp_path)
    with Repo(str(project)) as repo:
        dvc = {}
        for stage in repo.index.stages:
            deps = {d.def_path for d in stage.deps if not d.def_path.endswith("params.yaml")}
            dvc[stage.cmd] = (deps, {o.def_path for o in stage.outs})

    # The dry run prints each planned job's rule, input, output and shell command.
    dry = run(["snakemake", "--dry-run", "--printshellcmds", "--cores", "1"], project)
    plan = dry.stdout + dry.stderr  # Snakemake logs the plan on stderr
    snake: dict[str, tuple[set, set]] = {}
    for job in re.split(r"\n(?=rule \w+:)", plan)[1:]:
        fields = dict(re.findall(r"^    (input|output): (.*)$", job, re.MULTILINE))
        cmd = re.search(r"^Shell command: (.*)$", job, re.MULTILINE)
        if cmd and "output" in fields:  # `rule all` has no output and no command
            split = lambda text: {p.strip() for p in text.split(",") if p.strip()}
            snake[cmd.group(1).strip()] = (split(fields.get("input", "")), split(fields["output"]))

    variants = load(project / "params.yaml").variants
    assert len(dvc) == 6 + 4 * len(variants) and set(snake) == set(
        dvc
    )  # 6 shared stages + 4 per variant
    for cmd, (deps, outs) in dvc.items():
        inputs, outputs = snake[cmd]
        assert outputs == outs, cmd
        # DVC reads the report's inputs as whole folders; Snakemake lists the files inside them.
        assert all(any(_under(i, d) for d in deps) for i in inputs), cmd
        assert all(any(_under(i, d) for i in inputs) for d in deps), cmd
