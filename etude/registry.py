"""`etude promote`: each variant's trained model registered as `etude-<variant>`, and its
`champion` alias moved only when the new version beats the champion.

The new version is the LoggedModel of the workspace's train@V run (runs/train/V.json). It is
compared with the champion on the family's `champion_metrics` in order: the first that differs
beyond noise decides (next-note: test pitch cross-entropy, then OA at temperature 1; grid VAE:
onset F1, then OA of prior samples; spectral VAE: test MSE). Noise is the spread of the doctor's
seed runs (metrics/doctor.json) where it judged the variant, else none. A version records where
it came from: the git commit, the DVC experiment, and the dvc.lock entry of its model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from etude import tracking
from etude.doctor import DOCTOR_JSON
from etude.models import family_named
from etude.pipeline import MODEL_DIR, RUN_LINK, path_for
from etude.variants import load, variant_config

CHAMPION = "champion"
PREFIX = "etude-"


@dataclass
class Decision:
    variant: str
    version: str
    champion: str | None  # its version before this promotion
    promoted: bool
    reason: str
    compared: dict[str, tuple[float | None, float | None, float]]  # metric: champion, new, noise


def registered_name(variant: str) -> str:
    return f"{PREFIX}{variant}"


def noise_of(root: Path, variant: str) -> dict[str, float]:
    """MLflow metric name -> the doctor's seed spread of it, where the doctor judged `variant`."""
    path = root / DOCTOR_JSON
    if not path.exists():
        return {}
    spread = json.loads(path.read_text()).get("variants", {}).get(variant, {}).get("noise", {})
    names = {}
    for key, value in spread.items():
        if key.startswith("test_"):
            names[f"test.{key.removeprefix('test_')}"] = value
        elif key.startswith("oa_"):
            names[f"music.{key.removeprefix('oa_')}.oa_mean"] = value
    return names


def compare(
    champion: dict[str, float],
    new: dict[str, float],
    order: tuple[tuple[str, str], ...],
    noise: dict[str, float],
) -> tuple[bool, str, dict]:
    """Whether `new` beats `champion`: the first metric of `order` that differs beyond its noise
    decides."""
    compared = {}
    for metric, better in order:
        before, after = champion.get(metric), new.get(metric)
        compared[metric] = (before, after, noise.get(metric, 0.0))
        if before is None or after is None:
            continue
        gain = after - before if better == "higher" else before - after
        if abs(gain) > noise.get(metric, 0.0):
            word = "better" if gain > 0 else "worse"
            return gain > 0, f"{metric} {word}: {before:.4g} -> {after:.4g}", compared
    return False, "no metric differs beyond noise", compared


def lock_entry(root: Path, variant: str) -> str:
    """sha256 of dvc.lock's record of models/<variant> (its md5 and files), '' without one."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return ""
    stage = yaml.safe_load(lock.read_text()).get("stages", {}).get(f"train@{variant}", {})
    outs = [o for o in stage.get("outs", []) if o.get("path") == str(path_for(MODEL_DIR, variant))]
    return hashlib.sha256(json.dumps(outs, sort_keys=True).encode()).hexdigest() if outs else ""


def _git_commit(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip()


def promote(
    root: Path, variants: list[str] | None = None, out: Callable[[str], None] = print
) -> list[Decision]:
    """Register each variant's model and move `champion` where it is better; one line each."""
    import mlflow
    from mlflow.exceptions import MlflowException

    params = load(root / "params.yaml")
    tracking.init(params.tracking.experiment)
    client = mlflow.MlflowClient()
    decisions = []
    for variant in variants or list(params.variants):
        link_path = root / path_for(RUN_LINK, variant, stage="train")
        if not link_path.exists():
            out(f"promote: {variant}: not trained here ({link_path} missing): skipped")
            continue
        run_id = json.loads(link_path.read_text())["run_id"]
        model_id = tracking.model_of(run_id)
        if model_id is None:
            out(f"promote: {variant}: run {run_id} logged no model (trained before LoggedModels)")
            continue
        name = registered_name(variant)
        version = _version_of(client, name, model_id) or _register(
            client, root, name, variant, model_id, run_id
        )
        family = family_named(variant_config(params, variant).model)
        new = _metrics(client, model_id)
        try:
            holder = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            holder = None
        if holder is None:
            promoted, reason, compared = True, "first version", {}
        elif str(holder.version) == version:
            promoted, reason, compared = False, "already the champion", {}
        else:
            promoted, reason, compared = compare(
                _metrics(client, model_id_of(holder)),
                new,
                family.champion_metrics,
                noise_of(root, variant),
            )
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
        decision = Decision(
            variant, version, str(holder.version) if holder else None, promoted, reason, compared
        )
        decisions.append(decision)
        out(line(decision))
    if decisions and not any(d.promoted for d in decisions):
        out("promote: nothing better than the champions: no alias moved")
    return decisions


def line(d: Decision) -> str:
    moved = (
        f"champion -> v{d.version}"
        if d.promoted
        else f"champion stays v{d.champion}"
        + ("" if d.champion == d.version else f" (new v{d.version})")
    )
    numbers = "; ".join(
        f"{m} {_fmt(a)} -> {_fmt(b)} (noise {n:.2g})" for m, (a, b, n) in d.compared.items()
    )
    return f"promote: {registered_name(d.variant)}: {moved}: {d.reason}" + (
        f" [{numbers}]" if numbers else ""
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def model_id_of(version) -> str:
    """The LoggedModel a registered version holds: MLflow's SQL store leaves `model_id` unset and
    keeps it in the source `models:/<model_id>`."""
    return version.model_id or version.source.removeprefix("models:/")


def _metrics(client, model_id: str) -> dict[str, float]:
    return {m.key: m.value for m in client.get_logged_model(model_id).metrics or []}


def _version_of(client, name: str, model_id: str) -> str | None:
    """The version of `name` already registered from `model_id` (promote run twice)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    found = [v.version for v in versions if model_id_of(v) == model_id]
    return str(found[0]) if found else None


def _register(client, root: Path, name: str, variant: str, model_id: str, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    run = client.get_run(run_id)
    try:
        client.create_registered_model(name, description=f"etude variant {variant}")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags: dict[str, Any] = {
        "git_commit": run.data.tags.get("git_commit") or _git_commit(root),
        "dvc_exp_name": run.data.tags.get("dvc_exp_name", ""),
        "dvc_lock_model": lock_entry(root, variant),
        "variant": variant,
    }
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id
    )
    return str(version.version)
