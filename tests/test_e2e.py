"""The whole DAG on the tiny profile, for real: dvc repro, the README's commands from a new shell,
dvc exp run -S, snakemake, MLflow (runs, models, a moved store)."""

import html
import json
import re
import shutil

import mlflow
import pandas as pd
import pytest

from etude import serving
from etude.variants import load, variant_config
from tests.conftest import (
    REPO,
    edit_params,
    env,
    free_port,
    make_project,
    new_shell,
    run,
    wait_for_http,
)

pytestmark = pytest.mark.e2e
PER_VARIANT = ("configure", "train", "evaluate", "generate")
README = (REPO / "README.md").read_text()
LOCAL_PORT = ("--host", "127.0.0.1", "--workers", "1", "--port")


def variants(project):
    return list(load(project / "params.yaml").variants)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def mlflow_runs(project):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["etude"], order_by=["attributes.start_time ASC"])


def run_id(project, stage, variant):
    return json.loads((project / f"runs/{stage}/{variant}.json").read_text())["run_id"]


def readme_line(line: str) -> str:
    assert line in README, f"the README no longer shows `{line}`"
    return line


def check_outputs(project):
    page = (project / "reports/index.html").read_text()
    for variant in variants(project):
        published = {p.name for p in (project / f"models/{variant}").iterdir()} - {
            ".snakemake_timestamp"
        }
        assert published == {"model.safetensors", "model.json"}
        evaluation = json.loads((project / f"metrics/{variant}/eval.json").read_text())
        assert evaluation["model"].keys() >= evaluation["baseline"].keys()
        samples = project / f"samples/{variant}"
        files = sorted(samples.glob("*.mid")) + sorted(samples.glob("*.wav"))
        assert files, variant
        for midi in samples.glob(
            "*.mid"
        ):  # each MIDI sample linked from the page, and playable in it
            assert f"../samples/{variant}/{midi.name}" in page
            assert (
                midi.with_suffix(".mp3").is_file()
                and f"<figcaption>{midi.stem}</figcaption>" in page
            )
        assert f"<h2>{variant}</h2>" in page
        trained = json.loads((project / f"metrics/{variant}/train.json").read_text())
        for verdict in trained["diagnosis"]:  # each verdict on the page with its remedy command
            assert verdict["evidence"] and html.escape(verdict["command"]) in page
        music = json.loads((project / f"metrics/{variant}/music.json").read_text())
        if variant_config(load(project / "params.yaml"), variant).model != "spectral_vae":
            groups = set(pd.read_parquet(samples / "samples.parquet")["group"])
            assert set(music["groups"]) == groups and music["ceiling"]["count"] > 0
            assert all(
                {"oa_mean", "kld_mean", "features"} <= scores.keys()
                for scores in music["groups"].values()
            )
    clips = list(project.glob("samples/*/*.wav")) + list(project.glob("samples/*/*.mp3"))
    assert (
        page.count("data:audio/mpeg;base64,") == len(clips)
        and "Audio used: rendered: Merlin.sf2" in page
    )
    assert "data:audio/wav" not in page
    assert "data:image/png;base64," in page
    assert "Samples against the data" in page and "ceiling OA" in page


def check_mlflow(project, runs):
    """Stage runs cover their work, the experiment opens on training runs, models load back."""
    experiment = mlflow.get_experiment_by_name("etude")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    for variant in variants(project):
        evaluation = runs[
            (runs["tags.stage"] == "evaluate") & (runs["tags.variant"] == variant)
        ].iloc[-1]
        written = (project / f"metrics/{variant}/eval.json").stat().st_mtime
        assert (
            evaluation["start_time"].timestamp()
            <= written
            <= evaluation["end_time"].timestamp() + 1
        )
        train = runs[runs["run_id"] == run_id(project, "train", variant)].iloc[0]
        assert train["tags.diagnosis"] == (
            ", ".join(
                v["name"]
                for v in json.loads((project / f"metrics/{variant}/train.json").read_text())[
                    "diagnosis"
                ]
            )
            or "healthy"
        )
        assert train["metrics.best_val_loss"] > 0 and any(
            c.startswith("metrics.test.") and train[c] == train[c] for c in runs.columns
        )
    # One LoggedModel per variant, from its training run: the configuration as params, test
    # metrics and OA linked to it and to the test split.
    models = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id], output_format="list"
    )
    by_run = {m.source_run_id: m for m in models}
    for variant in variants(project):
        logged = by_run[run_id(project, "train", variant)]
        assert logged.name == variant and logged.params["seed"]
        linked = {m.key: m for m in logged.metrics}
        test = [m for k, m in linked.items() if k.startswith("test.")]
        assert test and all(m.dataset_name == "maestro-sample-test" for m in test)
        assert all(m.dataset_digest for m in test)
    store = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    config, family, model = serving.load_from_run(run_id(project, "train", "rnn_stacked"), store)
    assert family.name == "note_rnn" and config.lstm_units == [256, 128]
    assert sum(p.numel() for p in model.parameters()) > 0


def check_models_tab(project, tmp_path):
    """The experiment's Models tab in Chromium, on an MLflow server over the project's store,
    lists every variant's model (screenshot: models-tab.png in the test's folder)."""
    import subprocess
    import sys

    from playwright.sync_api import sync_playwright

    from tests.test_listen import CHROMIUM, CHROMIUM_ARGS

    port = free_port()
    store = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            store,
            *LOCAL_PORT,
            str(port),
        ],
        env=env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health")
        experiment = mlflow.get_experiment_by_name("etude").experiment_id
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(
                f"http://127.0.0.1:{port}/#/experiments/{experiment}/models"
                "?workflowType=machine_learning"
            )
            for variant in variants(project):
                page.get_by_text(variant, exact=True).first.wait_for(timeout=60_000)
            assert page.get_by_text("Agent versions").count() == 0  # the GenAI view's name
            page.screenshot(path=str(tmp_path / "models-tab.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dvc_repro_then_readme_commands_from_a_new_shell(tmp_path):
    project = make_project(tmp_path / "first")
    names = variants(project)
    first = run(["dvc", "repro"], project)
    assert ran_stages(first.stdout) == {"fetch", "ingest", "tokenize", "grids", "mel", "report"} | {
        f"{s}@{v}" for s in PER_VARIANT for v in names
    }
    check_outputs(project)

    runs = mlflow_runs(project)
    assert sorted(runs["tags.stage"] + "@" + runs["tags.variant"]) == sorted(
        f"{s}@{v}" for s in ("train", "evaluate", "generate") for v in names
    )
    assert set(runs["tags.runner"]) == {"dvc"} and (runs["tags.git_commit"].str.len() == 40).all()
    train = runs[runs["tags.stage"] == "train"].set_index("tags.variant")
    assert (
        train.loc["rnn_stacked", "params.lr"] == "0.001"
        and train.loc["rnn_baseline", "params.lr"] == "0.005"
    )
    history = mlflow.MlflowClient().get_metric_history(
        run_id(project, "train", "rnn_stacked"), "val_loss"
    )
    assert [m.step for m in history] == [0, 1]
    check_mlflow(project, runs)
    check_models_tab(project, tmp_path)
    stacked_run, baseline_run = (
        run_id(project, "train", "rnn_stacked"),
        run_id(project, "train", "rnn_baseline"),
    )

    run(["git", "add", "-A"], project)
    run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline results"],
        project,
    )
    exp = new_shell(readme_line("dvc exp run -S lr=0.0005"), project)
    # Variants that set their own lr keep their effective configuration: not retrained.
    params = load(project / "params.yaml")
    using_default_lr = {v for v in names if "lr" not in params.variants[v]}
    assert using_default_lr and ran_stages(exp.stdout) == {f"configure@{v}" for v in names} | {
        "report"
    } | {f"{s}@{v}" for s in ("train", "evaluate", "generate") for v in using_default_lr}
    assert run_id(project, "train", "rnn_baseline") == baseline_run
    runs = mlflow_runs(project)
    new = runs[(runs["tags.stage"] == "train") & (runs["tags.dvc_exp_name"] != "")]
    assert set(new["tags.variant"]) == using_default_lr and set(new["params.lr"]) == {"0.0005"}
    assert new_shell(readme_line("dvc exp show --only-changed"), project).stdout.strip()
    assert "0.0005" in run(["dvc", "exp", "show", "--json"], project).stdout
    assert "index.html" in new_shell(readme_line("dvc plots show"), project).stdout
    listed = new_shell(readme_line("python -m etude.checkpoints"), project).stdout
    assert "rnn_stacked" in listed
    report = (project / "reports/summary.md").read_text()
    assert "0.0005" in report  # the runs table shows the params that differ between runs

    # Back to the committed lr: DVC restores rnn_stacked from its run-cache instead of retraining,
    # and the restored run link still names the MLflow run that produced those outputs.
    run(["git", "checkout", "--", "params.yaml"], project)
    restored = run(["dvc", "repro"], project)
    assert "train@rnn_stacked" not in ran_stages(restored.stdout)
    assert run_id(project, "train", "rnn_stacked") == stacked_run
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], project).stdout

    # The repository moved: the MLflow store follows it, models load back, new runs log beside it.
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    edit_params(moved / "params.yaml", {"variants": {"rnn_baseline": {"lr": 0.004}}})
    run(["dvc", "repro", "train@rnn_baseline"], moved)
    store = f"sqlite:///{moved / 'mlruns' / 'mlflow.db'}"
    new_run = run_id(moved, "train", "rnn_baseline")
    for logged in (stacked_run, new_run):
        _, family, _ = serving.load_from_run(logged, store)
        assert family.name == "note_rnn"
    mlflow.set_tracking_uri(store)
    assert mlflow.get_run(new_run).info.artifact_uri.startswith((moved / "mlruns").as_uri())


def test_snakemake_runs_the_same_dag_and_reruns_on_param_change(tmp_path):
    project = make_project(tmp_path)
    run(["snakemake", "--cores", "2"], project)
    check_outputs(project)
    runs = mlflow_runs(project)
    assert set(runs["tags.runner"]) == {"snakemake"} and len(runs) == 3 * len(variants(project))
    assert "Nothing to be done" in run(["snakemake", "--cores", "2", "--dry-run"], project).stdout

    edit_params(project / "params.yaml", {"variants": {"rnn_stacked": {"lr": 0.002}}})
    plan = run(["snakemake", "--cores", "2", "--dry-run"], project).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan[plan.index("Job stats") :], re.MULTILINE))
    assert jobs == {
        "configure": "1",
        "train": "1",
        "evaluate": "1",
        "generate": "1",
        "report": "1",
        "all": "1",
        "total": "6",
    }
    assert "configs/rnn_stacked.json" in plan and "configs/rhythm_vae.json" not in plan
