"""MLflow tracking shared by every stage.

The store is SQLite at an absolute path under the repository root (DVC_ROOT when DVC runs a queued
experiment in a temporary copy), artifacts beside it, so every runner logs to one place.
MLFLOW_TRACKING_URI points it at a tracking server instead. The database is created and migrated
once, under a file lock, before any run uses it: concurrent first use of a fresh SQLite store races
on migrations. Processes that start at once on a fresh experiment race to create it on any store
(a server answers all but one "already exists"): the others fetch it, and every run names its
experiment id explicitly, so none lands in MLflow's Default experiment.

MLflow stores artifact locations as absolute paths. When the repository has been moved or copied,
`init` rewrites them to the store's new place, so artifacts stay readable and new runs log beside
the database rather than into the old folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# A tracking server the user chose; mlflow.set_tracking_uri later sets the variable itself.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
# The MLflow UI opens an experiment of this kind on its runs, not on the GenAI overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Where a training run's model lies among its artifacts.
# (table, column) pairs of the SQLite schema that hold absolute artifact paths.
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def store_dir() -> Path:
    return project_root() / "mlruns"


def tracking_uri() -> str:
    return USER_TRACKING_URI or f"sqlite:///{store_dir() / 'mlflow.db'}"


def init(experiment: str) -> str:
    """Create (or migrate) the store and the experiment once; returns the experiment id."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    local = uri == f"sqlite:///{store_dir() / 'mlflow.db'}"
    lock = None
    if local:
        store_dir().mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(store_dir() / ".init.lock"))
        lock.acquire(timeout=300)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            return create_experiment(experiment, artifact_root().as_uri() if local else None)
        if local:
            relocate(found.artifact_location)
        if found.tags.get("mlflow.experimentKind") is None:
            key, value = next(iter(EXPERIMENT_KIND.items()))
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    finally:
        if lock:
            lock.release()


def create_experiment(experiment: str, artifact_location: str | None) -> str:
    """Create the experiment, or fetch it if another process created it first; returns its id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.create_experiment(
            experiment, artifact_location=artifact_location, tags=EXPERIMENT_KIND
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The winner's transaction may not be visible to this request yet: ask again, briefly.
    for attempt in range(6):
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        time.sleep(0.1 * 2**attempt)
    raise RuntimeError(f"MLflow experiment {experiment!r} already exists, yet cannot be fetched")


def artifact_root() -> Path:
    return store_dir() / "artifacts"


def relocate(artifact_location: str) -> None:
    """If the store was moved or copied, point every artifact path at its artifacts folder."""
    current = artifact_root().as_uri()
    old = artifact_location.rstrip("/")
    if old == current or not old.endswith("/artifacts"):
        return
    with sqlite3.connect(store_dir() / "mlflow.db") as db:
        tables = {
            row[0] for row in db.execute("select name from sqlite_master where type = 'table'")
        }
        for table, column in ARTIFACT_COLUMNS:
            if table in tables:
                db.execute(
                    f"update {table} set {column} = ? || substr({column}, ?) "
                    f"where substr({column}, 1, ?) = ?",
                    (current, len(old) + 1, len(old), old),
                )
    print(f"mlflow: the store moved: artifact paths {old} -> {current}")


def test_dataset(pieces: Path, data) -> Any:
    """The test split as an MLflow dataset: its pieces (id, path, sha256, duration, notes), named
    after the data source, its digest over the pieces' contents (`data`: the `data:` params)."""
    import mlflow.data
    import pandas as pd

    table = pd.read_parquet(pieces)
    test = table[(table["split"] == "test") & (table["status"] == "ok")]
    test = test[["id", "path", "sha256", "duration", "note_count"]].sort_values("id")
    digest = hashlib.sha256("".join(test["sha256"]).encode()).hexdigest()[:16]
    # A source MLflow can resolve: the pinned wheel's PyPI page, or the local corpus.
    source = (
        f"https://pypi.org/project/{data.sample.package}/{data.sample.version}/"
        if data.source == "maestro-sample"
        else str(Path(data.path).resolve())
    )
    return mlflow.data.from_pandas(
        test.reset_index(drop=True), source=source, name=f"{data.source}-test", digest=digest
    )


def model_of(run_id: str) -> str | None:
    """The LoggedModel a training run logged (etude.serving.log), if any."""
    import mlflow

    client = mlflow.MlflowClient()
    found = client.search_logged_models(
        experiment_ids=[client.get_run(run_id).info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        max_results=1,
    )
    return found[0].model_id if found else None


def log_to_run(run_link: Path, metrics: dict[str, float], dataset=None) -> None:
    """Add metrics to the (finished) run a link file names, e.g. test metrics to the training
    run; linked to the run's LoggedModel, and to `dataset` (an MLflow dataset) when given, which
    also becomes an input of the run."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag

    link = json.loads(Path(run_link).read_text())
    client = mlflow.MlflowClient()
    model_id = model_of(link["run_id"])
    names = {}
    if dataset is not None:
        names = {"dataset_name": dataset.name, "dataset_digest": dataset.digest}
        context = InputTag(key="mlflow.data.context", value="test")
        client.log_inputs(
            link["run_id"], datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])]
        )
    for key, value in metrics.items():
        client.log_metric(link["run_id"], key, value, model_id=model_id, **names)


def ui_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The experiment's page in the MLflow UI, on its training runs (the UI's default is GenAI)."""
    return f"{host}/#/experiments/{experiment_id}?workflowType=machine_learning"


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=project_root()
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def named_in_experiment(name: str) -> str:
    """`name@<DVC experiment>` inside a DVC experiment (train-rnn_baseline@mushy-razz), else
    `name`: runs and models of experiments tell apart in the UI."""
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{name}@{exp}" if exp else name


def run_tags(stage: str, variant: str | None, config_hash: str | None) -> dict[str, str]:
    env = os.environ
    return {
        "stage": stage,
        "variant": variant or "",
        "config_hash": config_hash or "",
        "git_commit": _git_commit(),
        "dvc_exp_name": env.get("DVC_EXP_NAME", ""),
        "dvc_baseline_rev": env.get("DVC_EXP_BASELINE_REV", ""),
        "dvc_stage": env.get("DVC_STAGE", ""),
        "runner": "dvc" if "DVC_STAGE" in env else env.get("ETUDE_RUNNER", "python"),
    }


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@contextmanager
def start_run(
    experiment: str,
    stage: str,
    variant: str | None,
    link_path: Path,
    params: dict[str, Any] | None = None,
    config_hash: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[Any]:
    """An MLflow run for one stage (and variant), linked from `link_path`.

    The link file is a stage output: when DVC restores the stage from its cache, the file it
    restores still names the run that produced the outputs. `resume_run_id` continues the run of an
    interrupted training instead of opening a new one.
    """
    import mlflow

    experiment_id = init(experiment)
    name = named_in_experiment(f"{stage}-{variant}" if variant else stage)
    with mlflow.start_run(
        run_id=resume_run_id,
        experiment_id=experiment_id,
        run_name=None if resume_run_id else name,
        tags=run_tags(stage, variant, config_hash),
    ) as run:
        if params and not resume_run_id:
            mlflow.log_params(flatten(params))
        # No local path in the link: it is a stage output, the same bytes wherever the repository
        # lies.
        link = {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "stage": stage,
            "variant": variant,
        }
        if USER_TRACKING_URI:
            link["tracking_uri"] = USER_TRACKING_URI
        link_path.parent.mkdir(parents=True, exist_ok=True)
        link_path.write_text(json.dumps(link, indent=2) + "\n")
        yield run


def tag_verdicts(verdicts: list) -> None:
    """Verdicts (etude.diagnosis.Verdict) as tags of the active run: `diagnosis` lists their names
    ("healthy": none), `diagnosis.<name>` holds each one's evidence and remedy. A run judged again
    (other thresholds) loses the tags of the verdicts it no longer draws."""
    import mlflow

    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    for tag in client.get_run(run_id).data.tags:
        if tag == "diagnosis" or tag.startswith("diagnosis."):
            client.delete_tag(run_id, tag)
    mlflow.set_tags(
        {
            "diagnosis": ", ".join(v.name for v in verdicts) or "healthy",
            **{f"diagnosis.{v.name}": v.line()[:5000] for v in verdicts},
        }
    )


def tag_doctor_runs(experiment: str, treated: dict[str, dict[str, Any]], parent: str) -> None:
    """The runs of each doctor experiment (by its DVC name), tagged `doctor.parent` (the experiment
    the verdicts were read from, "workspace" for the workspace's run), `doctor.verdicts` and
    `doctor.round`; the parent's train run id too, where one is found."""
    import mlflow

    if not treated:
        return
    experiment_id = init(experiment)
    client = mlflow.MlflowClient()
    for name, entry in treated.items():
        parent_run = _train_run(client, experiment_id, entry["variant"], parent)
        for run in client.search_runs(
            [experiment_id], filter_string=f"tags.dvc_exp_name = '{name}'"
        ):
            tags = {
                "doctor.parent": parent or "workspace",
                "doctor.verdicts": ",".join(sorted(entry["verdicts"])),
                "doctor.round": str(entry["round"]),
            }
            if parent_run:
                tags["doctor.parent_run"] = parent_run
            for key, value in tags.items():
                client.set_tag(run.info.run_id, key, value)


def _train_run(client, experiment_id: str, variant: str, exp_name: str) -> str:
    """The newest train run of `variant` under DVC experiment `exp_name` ("" for the workspace)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.stage = 'train' and tags.variant = '{variant}' "
        f"and tags.dvc_exp_name = '{exp_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""


def music_metrics(music: dict) -> dict[str, float]:
    """music.json as MLflow metrics: `music.<group>.oa_mean`, `.kld_mean` and each feature's `.oa`,
    `.kld` (the ceiling as group `ceiling`); undefined values are left out."""
    groups = music["groups"] | ({"ceiling": music["ceiling"]} if music.get("ceiling") else {})
    flat = {}
    for group, result in groups.items():
        flat |= {f"music.{group}.{k}": result[k] for k in ("oa_mean", "kld_mean")}
        for feature, values in result["features"].items():
            flat |= {f"music.{group}.{feature}.{k}": values[k] for k in ("oa", "kld")}
    return {k: float(v) for k, v in flat.items() if v is not None}


def main() -> None:
    """`python -m etude.tracking`: initialise the store before parallel use (Snakemake onstart)."""
    from etude.params import parse

    experiment_id = init(parse().tracking.experiment)
    print(
        f"mlflow store {tracking_uri()} experiment id {experiment_id}; UI: {ui_url(experiment_id)}"
    )


if __name__ == "__main__":
    main()
