"""The spectral VAE: any segment length, the documented loss terms, and resuming a training run."""

import json
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from etude.models import spectral_vae as S
from etude.variants import variant_config
from tests.conftest import edit_params, kill_when, make_project, run


@pytest.fixture(scope="module")
def config(params):
    return variant_config(params, "spectral_vae")


@pytest.mark.parametrize("shape", [(128, 259), (64, 100), (128, 37), (40, 17)])
def test_any_segment_length_comes_back_at_its_own_size(params, shape):
    config = variant_config(params, "spectral_vae").model_copy(
        update={"channels": [4, 8, 8, 8], "latent_dim": 8}
    )
    model = S.SpectralVAE(config, shape).eval()
    out, mu, logvar = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 1, *shape) and mu.shape == logvar.shape == (2, 8)


def test_default_architecture_is_the_reference_one(params, config):
    model = S.SpectralVAE(config, (128, 259))
    assert model.encoded == (512, 8, 17)  # 4 stride-2 blocks: 1x128x259 -> 512x8x17
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512] and all(
        c.stride == (2, 2) for c in convs
    )
    assert isinstance(model.decoder[-1], torch.nn.ConvTranspose2d)  # linear output, no activation


def test_frequency_weights_follow_the_reference_bins(config):
    w = S.frequency_weights(config, 128)
    assert (w[:25] == 1.5).all() and (w[25:38] == 1).all() and (w[38:89] == 2).all()
    assert (w[89:102] == 1).all() and (w[102:] == 0.8).all()


def test_loss_terms_have_the_stated_scale(config):
    x = torch.randn(3, 1, 128, 40)
    out = x + 0.5
    uniform = S.loss_terms(x, out, torch.ones(128))
    # Uniform weights: the segment's summed squared error.
    assert torch.allclose(uniform["recon"], torch.full((3,), 0.25 * 128 * 40))
    weighted = S.loss_terms(x, out, S.frequency_weights(config, 128))
    assert torch.allclose(weighted["recon"], uniform["recon"])  # weights normalised to mean 1
    # Spectral compares FFT magnitudes on the orthonormal scale: bounded by recon, blind to phase
    # (a circular shift in time), and 0 only for the same magnitudes.
    assert (uniform["spectral"] > 0).all() and (
        uniform["spectral"] <= uniform["recon"] * (1 + 1e-5)
    ).all()
    rolled = S.loss_terms(x, torch.roll(x, 7, dims=-1), torch.ones(128))
    assert (rolled["recon"] > 100).all() and (rolled["spectral"] < 1e-6 * rolled["recon"]).all()
    # Range: zero inside [min - 0.5 R, max + 0.5 R], the distance outside it.
    r = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    assert (S.range_penalty(x, x * 1.5, 0.5) == 0).all()
    far = x.clone()
    far[:, 0, 0, 0] = x.flatten(1).amax(1) + r  # 0.5 R above the allowed band
    assert torch.allclose(S.range_penalty(x, far, 0.5), 0.5 * r)


def _history(project):
    return pd.read_csv(project / "metrics/spectral_vae/history.csv")


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _published(project):
    return load_file(project / "models/spectral_vae/model.safetensors")


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


TRAIN = ["python", "-m", "stages.train", "--variant", "spectral_vae"]


def test_training_resumes_after_a_kill_and_continues_with_new_lr_beta_and_epochs(tmp_path):
    project = make_project(
        tmp_path, {"variants": {"spectral_vae": {"epochs": 4, "checkpoint_every": 1}}}
    )
    run(["dvc", "repro", "configure@spectral_vae"], project)

    # Killed after epoch 2, rerun: continues at epoch 3 and ends bit-identical to an uninterrupted
    # run.
    assert kill_when(TRAIN, project, "epoch 2/4") == -signal.SIGKILL
    resumed = run(TRAIN, project)
    assert "resuming after epoch 2" in resumed.stdout and "epoch 3/4" in resumed.stdout
    (first_run,) = (project / "checkpoints/spectral_vae").iterdir()
    killed = {k: _weights(first_run / f"{k}.pt") for k in ("best", "last")}
    assert _same_weights(killed["best"], _published(project))
    history = _history(project)
    shutil.rmtree(project / "checkpoints")
    fresh = run(TRAIN, project)
    assert "resuming" not in fresh.stdout
    for kind, weights in killed.items():
        assert _same_weights(weights, _weights(first_run / f"{kind}.pt")), kind
    pd.testing.assert_frame_equal(history, _history(project))
    saved = torch.load(first_run / "last.pt", map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "scheduler", "progress"} <= saved.keys() and saved["progress"][
        "epoch"
    ] == 4
    assert (
        saved["scheduler"]["mode"] == "min"
    )  # ReduceLROnPlateau's state travels with the checkpoint

    # Continue that finished run: 2 more epochs, a new lr and beta. The best loss so far is kept.
    best_so_far = json.loads((project / "metrics/spectral_vae/train.json").read_text())[
        "best_val_loss"
    ]
    source = str((first_run / "last.pt").relative_to(project))
    edit_params(
        project / "params.yaml",
        {
            "variants": {
                "spectral_vae": {
                    "epochs": 6,
                    "lr": 1.0e-4,
                    "kl": {"beta": 0.1},
                    "resume_from": source,
                }
            }
        },
    )
    run(["dvc", "repro", "configure@spectral_vae"], project)
    more = run(TRAIN, project)
    assert (
        "continuing after epoch 4" in more.stdout
        and "epoch 5/6" in more.stdout
        and "epoch 1/6" not in more.stdout
    )
    longer = _history(project)
    assert len(longer) == 6
    pd.testing.assert_frame_equal(longer.iloc[:4], history)
    assert (longer["lr"].iloc[4:] == 1.0e-4).all() and (longer["weight_kl"].iloc[4:] == 0.1).all()
    summary = json.loads((project / "metrics/spectral_vae/train.json").read_text())
    assert summary["best_val_loss"] == min(best_so_far, longer["val_loss"].iloc[4:].min())
    if summary["best_epoch"] < 4:  # no better epoch since: best.pt is still the first run's best
        assert _same_weights(killed["best"], _published(project))


def test_resume_from_a_missing_checkpoint_names_it(tmp_path):
    project = make_project(
        tmp_path, {"variants": {"spectral_vae": {"resume_from": "checkpoints/nowhere/last.pt"}}}
    )
    run(["dvc", "repro", "configure@spectral_vae"], project)
    failed = run(TRAIN, project, check=False)
    assert (
        failed.returncode != 0
        and "resume_from" in failed.stderr
        and "nowhere/last.pt" in failed.stderr
    )


def test_evaluation_metrics_against_the_per_bin_mean(tmp_path, config):
    """The metric definitions on arrays whose answers are known."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    mel = SimpleNamespace(geometry={"top_db": 80.0}, denormalise=lambda x: x * 10 - 40)
    x = rng.normal(size=(4, 128, 50)).astype(np.float32)
    perfect = S.spectrogram_metrics(x, x, mel, config)
    assert (
        perfect["mse"] == 0
        and perfect["spectral_convergence"] == 0
        and perfect["log_spectral_distance_db"] == 0
    )
    assert perfect["out_of_range_share"] == 0 and perfect["hf_energy_ratio"] == pytest.approx(1)
    assert perfect["featureless_share"] == 0
    # 20 dB louder everywhere: magnitudes x10, so SC = 9, power x100 in the top bins, LSD 20 dB.
    louder = S.spectrogram_metrics(x, x + 2, mel, config)
    assert louder["spectral_convergence"] == pytest.approx(9, rel=1e-3)
    assert louder["hf_energy_ratio"] == pytest.approx(100, rel=1e-3)
    assert louder["log_spectral_distance_db"] == pytest.approx(20, rel=1e-3)
    assert louder["out_of_range_share"] > 0.02 and louder["featureless_share"] == 0
    flat = S.spectrogram_metrics(x, np.zeros_like(x), mel, config)
    assert flat["mse"] == pytest.approx(float((x**2).mean())) and flat["featureless_share"] == 1
    expected_lsd = np.sqrt(
        (np.maximum(10 * x, -40.0) ** 2).mean(1)
    ).mean()  # dB distance above the -80 dB floor
    assert flat["log_spectral_distance_db"] == pytest.approx(expected_lsd, rel=1e-5)
