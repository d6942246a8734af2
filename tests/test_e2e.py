"""The whole DAG on the tiny profile, for real: dvc repro, dvc exp run -S, snakemake, MLflow."""

import json
import re

import mlflow
import pytest

from tests.conftest import edit_params, make_project, run

pytestmark = pytest.mark.e2e
VARIANTS = ("rnn_baseline", "rnn_stacked", "rhythm_vae", "melody_vae", "spectral_vae")
# MIDI files per variant on the tiny profile: 2 temperatures x 1 file; prior, sweep, 2 interpolations.
MIDI_FILES = {"rnn_baseline": 2, "rnn_stacked": 2, "rhythm_vae": 4, "melody_vae": 4, "spectral_vae": 0}
PER_VARIANT = ("configure", "train", "evaluate", "generate")


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def mlflow_runs(project):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["etude"], order_by=["attributes.start_time ASC"])


def run_id(project, stage, variant):
    return json.loads((project / f"runs/{stage}/{variant}.json").read_text())["run_id"]


def check_outputs(project):
    for variant in VARIANTS:
        assert (project / f"models/{variant}/best.pt").stat().st_size > 0
        evaluation = json.loads((project / f"metrics/{variant}/eval.json").read_text())
        assert evaluation["model"].keys() >= evaluation["baseline"].keys()
        assert len(list((project / f"samples/{variant}").glob("*.mid"))) == MIDI_FILES[variant]
    # 2 test segments, their reconstructions, 2 prior samples: as Griffin-Lim audio, playable in the page.
    assert len(list((project / "samples/spectral_vae").glob("*.wav"))) == 6
    page = (project / "reports/index.html").read_text()
    assert all(v in page for v in VARIANTS) and "data:image/png;base64," in page
    assert "../samples/rnn_stacked/t2_s0.mid" in page
    assert page.count("data:audio/wav;base64,") == 6 and "Audio used: rendered: Merlin.sf2" in page


def test_dvc_repro_then_exp_run_reruns_only_what_changed(tmp_path):
    project = make_project(tmp_path)
    first = run(["dvc", "repro"], project)
    assert ran_stages(first.stdout) == {"fetch", "ingest", "tokenize", "grids", "mel", "report"} | {
        f"{s}@{v}" for s in PER_VARIANT for v in VARIANTS}
    check_outputs(project)

    runs = mlflow_runs(project)
    assert sorted(runs["tags.stage"] + "@" + runs["tags.variant"]) == sorted(
        f"{s}@{v}" for s in ("train", "evaluate", "generate") for v in VARIANTS)
    assert set(runs["tags.runner"]) == {"dvc"} and (runs["tags.git_commit"].str.len() == 40).all()
    train = runs[runs["tags.stage"] == "train"].set_index("tags.variant")
    assert train.loc["rnn_stacked", "params.lr"] == "0.001" and train.loc["rnn_baseline", "params.lr"] == "0.005"
    history = mlflow.MlflowClient().get_metric_history(run_id(project, "train", "rnn_stacked"), "val_loss")
    assert [m.step for m in history] == [0, 1]
    stacked_run, baseline_run = run_id(project, "train", "rnn_stacked"), run_id(project, "train", "rnn_baseline")

    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline results"], project)
    exp = run(["dvc", "exp", "run", "-S", "lr=0.0005"], project)
    # rnn_baseline and spectral_vae set their own lr: their effective configurations did not
    # change, so they are not retrained.
    using_default_lr = ("rnn_stacked", "rhythm_vae", "melody_vae")
    assert ran_stages(exp.stdout) == {f"configure@{v}" for v in VARIANTS} | {"report"} | {
        f"{s}@{v}" for s in ("train", "evaluate", "generate") for v in using_default_lr}
    assert run_id(project, "train", "rnn_baseline") == baseline_run
    runs = mlflow_runs(project)
    new = runs[(runs["tags.stage"] == "train") & (runs["tags.dvc_exp_name"] != "")]
    assert sorted(new["tags.variant"]) == sorted(using_default_lr) and set(new["params.lr"]) == {"0.0005"}
    shown = run(["dvc", "exp", "show", "--json"], project).stdout
    assert "0.0005" in shown and "pitch_top1" in shown
    report = (project / "reports/summary.md").read_text()
    assert "0.0005" in report  # the runs table shows the params that differ between runs

    # Back to the committed lr: DVC restores rnn_stacked from its run-cache instead of retraining,
    # and the restored run link still names the MLflow run that produced those outputs.
    run(["git", "checkout", "--", "params.yaml"], project)
    restored = run(["dvc", "repro"], project)
    assert "train@rnn_stacked" not in ran_stages(restored.stdout)
    assert run_id(project, "train", "rnn_stacked") == stacked_run
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], project).stdout


def test_snakemake_runs_the_same_dag_and_reruns_on_param_change(tmp_path):
    project = make_project(tmp_path)
    run(["snakemake", "--cores", "2"], project)
    check_outputs(project)
    runs = mlflow_runs(project)
    assert set(runs["tags.runner"]) == {"snakemake"} and len(runs) == 3 * len(VARIANTS)
    assert "Nothing to be done" in run(["snakemake", "--cores", "2", "--dry-run"], project).stdout

    edit_params(project / "params.yaml", {"variants": {"rnn_stacked": {"lr": 0.002}}})
    plan = run(["snakemake", "--cores", "2", "--dry-run"], project).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan[plan.index("Job stats"):], re.MULTILINE))
    assert jobs == {"configure": "1", "train": "1", "evaluate": "1", "generate": "1", "report": "1", "all": "1",
                    "total": "6"}
    assert "configs/rnn_stacked.json" in plan and "configs/rhythm_vae.json" not in plan
