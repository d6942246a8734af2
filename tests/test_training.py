"""Resume after an interrupted training: a killed run continues from its last checkpoint and ends
with exactly the weights of an uninterrupted run (CPU determinism), and the model it publishes is
byte-identical whether or not it was interrupted."""

import shutil
import signal

import torch

from tests.conftest import edit_params, kill_when, make_project, run

RESUME = {
    "variants": {"rnn_baseline": {"epochs": 4, "samples_per_epoch": 512, "keep_checkpoints": 2}}
}


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_killed_training_resumes_and_matches_uninterrupted(tmp_path):
    project = make_project(tmp_path, RESUME)
    run(["dvc", "repro", "configure@rnn_baseline"], project)
    train = ["python", "-m", "stages.train", "--variant", "rnn_baseline"]
    model_dir = project / "models/rnn_baseline"

    assert kill_when(train, project, "epoch 2/4") == -signal.SIGKILL
    assert not (model_dir / "model.safetensors").exists()

    resumed = run(train, project)
    assert "resuming after epoch 2" in resumed.stdout
    assert "epoch 3/4" in resumed.stdout and "epoch 1/4" not in resumed.stdout
    history = (project / "metrics/rnn_baseline/history.csv").read_text().splitlines()
    assert len(history) == 1 + 4
    (run_dir,) = (project / "checkpoints/rnn_baseline").iterdir()
    kept = {k: _weights(run_dir / f"{k}.pt") for k in ("last", "best")}
    published = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    assert set(published) == {"model.safetensors", "model.json"}
    # Only the newest keep_checkpoints periodic checkpoints stay.
    assert sorted(p.name for p in run_dir.glob("epoch_*.pt")) == ["epoch_0003.pt", "epoch_0004.pt"]

    shutil.rmtree(project / "checkpoints")
    fresh = run(train, project)
    assert "resuming" not in fresh.stdout
    for kind, weights in kept.items():
        again = _weights(run_dir / f"{kind}.pt")
        assert weights.keys() == again.keys()
        for name in weights:
            assert torch.equal(weights[name], again[name]), f"{kind}.pt {name} differs after resume"
    assert (project / "metrics/rnn_baseline/history.csv").read_text().splitlines() == history
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == published, (
        "models/ bytes differ"
    )


def test_checkpoint_folders_of_gone_configurations_are_listed_and_removed(tmp_path):
    project = make_project(tmp_path, {"variants": {"rnn_baseline": {"epochs": 1}}})
    run(["dvc", "repro", "train@rnn_baseline"], project)
    (used,) = (project / "checkpoints/rnn_baseline").iterdir()
    listed = run(["python", "-m", "etude.checkpoints"], project).stdout
    assert f"checkpoints/rnn_baseline/{used.name}  in use: params.yaml" in listed

    # Another configuration: the first run's folder is stale, the new one in use.
    edit_params(project / "params.yaml", {"variants": {"rnn_baseline": {"lr": 0.002}}})
    run(["dvc", "repro", "train@rnn_baseline"], project)
    removed = run(["python", "-m", "etude.checkpoints", "--remove"], project).stdout
    assert f"checkpoints/rnn_baseline/{used.name}  stale: removed" in removed
    (left,) = (project / "checkpoints/rnn_baseline").iterdir()
    assert left != used and (left / "last.pt").exists()
