"""MLflow tracking shared by every stage.

The store is SQLite at an absolute path under the repository root (DVC_ROOT when DVC runs a queued
experiment in a temporary copy), artifacts beside it, so every runner logs to one place.
MLFLOW_TRACKING_URI points it at a tracking server instead. The database is created and migrated
once, under a file lock, before any run uses it: concurrent first use of a fresh SQLite store races
on migrations.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")



def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def store_dir() -> Path:
    return project_root() / "mlruns"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_dir() / 'mlflow.db'}"


def init(experiment: str) -> str:
    """Create (or migrate) the store and the experiment once; returns the experiment id."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    lock = None
    if uri.startswith("sqlite:///"):
        store_dir().mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(store_dir() / ".init.lock"))
        lock.acquire(timeout=300)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        artifacts = (store_dir() / "artifacts").as_uri() if lock else None
        return mlflow.create_experiment(experiment, artifact_location=artifacts)
    finally:
        if lock:
            lock.release()


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=project_root())
    return done.stdout.strip() if done.returncode == 0 else ""


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
    name = f"{stage}-{variant}" if variant else stage
    with mlflow.start_run(run_id=resume_run_id, experiment_id=experiment_id, run_name=None if resume_run_id else name,
                          tags=run_tags(stage, variant, config_hash)) as run:
        if params and not resume_run_id:
            mlflow.log_params(flatten(params))
        link = {"run_id": run.info.run_id, "experiment_id": experiment_id, "tracking_uri": tracking_uri(),
                "stage": stage, "variant": variant}
        link_path.parent.mkdir(parents=True, exist_ok=True)
        link_path.write_text(json.dumps(link, indent=2) + "\n")
        yield run


def main() -> None:
    """`python -m etude.tracking`: initialise the store before parallel use (Snakemake onstart)."""
    from etude.params import load

    print(f"mlflow store {tracking_uri()} experiment id {init(load().tracking.experiment)}")


if __name__ == "__main__":
    main()
