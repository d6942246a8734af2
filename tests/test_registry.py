"""`etude promote` against a real MLflow store: the first version becomes champion, a second
promotion with nothing new moves nothing, a worse model is registered but not crowned, a better
one beyond the doctor's noise is."""

import json
import shutil

import mlflow
import pytest
import torch

from etude import model_card, registry, serving, tracking
from etude.models import family_named
from etude.variants import variant_config
from tests.conftest import REPO

VARIANT = "rnn_baseline"
STATS = {"step_mean": 0.1, "step_std": 0.2, "duration_mean": 0.3, "duration_std": 0.4}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "USER_TRACKING_URI", None)
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def trained(project, params, cross_entropy: float, oa: float) -> str:
    """A training run of VARIANT with its LoggedModel and test metrics, as the stages log them."""
    config = variant_config(params, VARIANT)
    family = family_named(config.model)
    torch.manual_seed(0)
    folder = project / "models" / VARIANT
    model_card.save_model(
        folder, family, config, {"stats": STATS}, family.build(config, {"stats": STATS})
    )
    link = project / "runs/train" / f"{VARIANT}.json"
    with tracking.start_run(params.tracking.experiment, "train", VARIANT, link) as run:
        serving.log(folder, VARIANT, config, params.generate)
    tracking.log_to_run(link, {"test.pitch_cross_entropy": cross_entropy, "music.t1.oa_mean": oa})
    return run.info.run_id


def test_the_champion_moves_only_to_a_better_model(project, params):
    said = []
    trained(project, params, 4.10, 0.70)
    (first,) = registry.promote(project, [VARIANT], said.append)
    assert first.promoted and first.version == "1" and first.reason == "first version"

    (again,) = registry.promote(project, [VARIANT], said.append)
    assert not again.promoted and again.reason == "already the champion"
    assert said[-1] == "promote: nothing better than the champions: no alias moved"

    # Worse pitch cross-entropy: registered as version 2, the champion stays.
    trained(project, params, 4.30, 0.80)
    (worse,) = registry.promote(project, [VARIANT], said.append)
    assert (worse.version, worse.promoted, worse.champion) == ("2", False, "1")
    assert worse.reason == "test.pitch_cross_entropy worse: 4.1 -> 4.3"

    # Within the doctor's noise on cross-entropy, so OA decides: better.
    noise = {"test_pitch_cross_entropy": 0.05, "oa_t1": 0.01}
    (project / "metrics").mkdir()
    (project / "metrics/doctor.json").write_text(
        json.dumps({"variants": {VARIANT: {"noise": noise}}})
    )
    trained(project, params, 4.12, 0.75)
    (better,) = registry.promote(project, [VARIANT], said.append)
    assert (better.version, better.promoted) == ("3", True)
    assert better.reason == "music.t1.oa_mean better: 0.7 -> 0.75"
    assert "champion -> v3" in said[-1] and "(noise 0.05)" in said[-1]

    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(registry.registered_name(VARIANT), "champion")
    assert str(champion.version) == "3" and champion.tags["variant"] == VARIANT
    assert set(champion.tags) >= {"git_commit", "dvc_exp_name", "dvc_lock_model"}
    # The champion loads by its alias and answers.
    model = mlflow.pyfunc.load_model(f"models:/{registry.registered_name(VARIANT)}@champion")
    (answer,) = model.predict(
        {"primer": [[60, 0.0, 0.5]], "n_notes": 4, "temperature": 1.0, "seed": 1}
    )
    assert len(answer["notes"]) == 4
