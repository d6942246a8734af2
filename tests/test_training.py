"""Resume after an interrupted training: a killed run continues from its last checkpoint and ends
with exactly the weights of an uninterrupted run (CPU determinism)."""

import shutil
import signal

import torch

from tests.conftest import kill_when, make_project, run

RESUME = {"variants": {"rnn_baseline": {"epochs": 4, "samples_per_epoch": 512}}}


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_killed_training_resumes_and_matches_uninterrupted(tmp_path):
    project = make_project(tmp_path, RESUME)
    run(["dvc", "repro", "tokenize", "configure@rnn_baseline"], project)
    train = ["python", "-m", "stages.train", "--variant", "rnn_baseline"]

    assert kill_when(train, project, "epoch 2/4") == -signal.SIGKILL
    assert not (project / "models/rnn_baseline/last.pt").exists()

    resumed = run(train, project)
    assert "resuming after epoch 2" in resumed.stdout
    assert "epoch 3/4" in resumed.stdout and "epoch 1/4" not in resumed.stdout
    history = (project / "metrics/rnn_baseline/history.csv").read_text().splitlines()
    assert len(history) == 1 + 4
    kept = {k: _weights(project / f"models/rnn_baseline/{k}.pt") for k in ("last", "best")}

    shutil.rmtree(project / "checkpoints")
    fresh = run(train, project)
    assert "resuming" not in fresh.stdout
    for kind, weights in kept.items():
        again = _weights(project / f"models/rnn_baseline/{kind}.pt")
        assert weights.keys() == again.keys()
        for name in weights:
            assert torch.equal(weights[name], again[name]), f"{kind}.pt {name} differs after resume"
    assert (project / "metrics/rnn_baseline/history.csv").read_text().splitlines() == history
    assert sorted(p.name for p in (project / "checkpoints/rnn_baseline").glob("*/epoch_*.pt")) == [
        f"epoch_{i:04d}.pt" for i in range(1, 5)]
