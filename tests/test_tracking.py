"""MLflow tracking against a real local store: runs linked from their stage outputs, verdicts as
tags, the LoggedModel rebuilt from its run, and the flat metric names."""

import json

import mlflow
import pytest
import torch

from etude import model_card, serving, tracking
from etude.diagnosis import Verdict
from etude.models import family_named
from etude.variants import variant_config


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the store lies under the project root
    monkeypatch.setattr(tracking, "USER_TRACKING_URI", None)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_a_stage_run_is_linked_tagged_and_its_model_rebuilt(store, params):
    config = variant_config(params, "rnn_baseline")
    family = family_named(config.model)
    torch.manual_seed(0)
    model = family.build(
        config,
        {"stats": {"step_mean": 0.1, "step_std": 0.2, "duration_mean": 0.3, "duration_std": 0.4}},
    )
    model_card.save_model(
        store / "models/v",
        family,
        config,
        {"stats": {"step_mean": 0.1, "step_std": 0.2, "duration_mean": 0.3, "duration_std": 0.4}},
        model,
    )
    link = store / "runs/train/v.json"
    verdicts = [Verdict("plateau", "flat", "a higher learning rate", {"variants.v.lr": 0.002}, 3)]
    with tracking.start_run(
        "tracking-test",
        "train",
        "v",
        link,
        params={"lr": config.lr, "kl": {"beta": 0.1}},
        config_hash="abc",
    ) as run:
        tracking.tag_verdicts(verdicts)
        model_id = serving.log(store / "models/v", "v", config, params.generate)
    written = json.loads(link.read_text())
    assert (
        written["run_id"] == run.info.run_id
        and written["variant"] == "v"
        and "tracking_uri" not in written
    )

    logged = mlflow.MlflowClient().get_run(run.info.run_id)
    assert logged.data.params["kl.beta"] == "0.1" and logged.data.tags["variant"] == "v"
    assert logged.data.tags["diagnosis"] == "plateau"
    assert logged.data.tags["diagnosis.plateau"].startswith("plateau (epoch 3): flat. Remedy:")

    tracking.log_to_run(link, {"test.pitch_top1": 0.25})
    assert mlflow.MlflowClient().get_run(run.info.run_id).data.metrics["test.pitch_top1"] == 0.25

    # A LoggedModel named after the variant, with the configuration as its params; the files of
    # models/v byte for byte.
    (logged_model,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert logged_model.model_id == model_id and logged_model.name == "v"
    assert logged_model.source_run_id == run.info.run_id
    assert logged_model.params["lr"] == str(config.lr)
    files = mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(store / "got"))
    for name in (model_card.WEIGHTS, model_card.MODEL_CARD):
        (copy,) = (store / "got").rglob(name)
        assert copy.read_bytes() == (store / "models/v" / name).read_bytes(), files

    rebuilt_config, rebuilt_family, rebuilt = serving.load_from_run(run.info.run_id)
    assert rebuilt_config == config and rebuilt_family is family
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name


def test_a_judged_again_run_loses_the_tags_of_verdicts_it_no_longer_draws(store):
    with tracking.start_run("tracking-test", "train", "v", store / "link.json") as run:
        tracking.tag_verdicts([Verdict("overfitting", "e", "r")])
        tracking.tag_verdicts([])
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["diagnosis"] == "healthy" and "diagnosis.overfitting" not in tags


def test_flat_names():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {
        "a.b": 1,
        "a.c.d": 2,
        "e": 3,
    }
    music = {
        "groups": {
            "t1": {"oa_mean": 0.7, "kld_mean": None, "features": {"pitch": {"oa": 0.5, "kld": 0.1}}}
        },
        "ceiling": None,
    }
    assert tracking.music_metrics(music) == {
        "music.t1.oa_mean": 0.7,
        "music.t1.pitch.oa": 0.5,
        "music.t1.pitch.kld": 0.1,
    }


def test_the_test_split_is_a_dataset_named_after_its_source(tmp_path, params):
    import pandas as pd

    pieces = pd.DataFrame(
        {
            "id": [0, 1, 2],
            "path": ["a.mid", "b.mid", "c.mid"],
            "split": ["train", "test", "test"],
            "status": ["ok", "ok", "quarantined"],
            "sha256": ["aa", "bb", "cc"],
            "duration": [1.0, 2.0, 3.0],
            "note_count": [10, 20, 30],
        }
    )
    pieces.to_parquet(tmp_path / "pieces.parquet")
    dataset = tracking.test_dataset(tmp_path / "pieces.parquet", params.data)
    assert dataset.name == "maestro-sample-test" and list(dataset.df["path"]) == ["b.mid"]
    assert dataset.source.url.startswith("https://pypi.org/project/")
    other = params.data.model_copy(update={"source": "midi_dir", "path": str(tmp_path)})
    pieces.assign(sha256=["aa", "bd", "cc"]).to_parquet(tmp_path / "pieces.parquet")
    moved = tracking.test_dataset(tmp_path / "pieces.parquet", other)
    assert moved.digest != dataset.digest and moved.name == "midi_dir-test"
