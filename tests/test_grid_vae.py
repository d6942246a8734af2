"""The grid VAE family's own rules: loss weights over epochs, masked reconstruction, onset scores,
and its verdicts' remedies rendered from the params in force."""

import numpy as np
import pandas as pd
import pytest
import torch

from etude.diagnosis import fired
from etude.models import grid_vae
from etude.models.grid_vae import FAMILY, GridVAE, loss_weights
from etude.variants import variant_config


@pytest.fixture(scope="module")
def config(params):
    return variant_config(params, "rhythm_vae").model_copy(
        update={"encoder_units": 16, "decoder_units": 16, "head_units": 16}
    )


def test_the_timeshift_ramp_and_kl_schedule_set_the_weights(config):
    ramped = config.model_copy(update={"timeshift_ramp_epochs": 4})
    features = ("onset", "velocity", "timeshift")
    weights = [loss_weights(ramped, features, e)["timeshift"] for e in (0, 1, 3, 10)]
    assert weights == pytest.approx([config.loss.timeshift * f for f in (0.25, 0.5, 1.0, 1.0)])
    assert loss_weights(ramped, features, None)["kl"] == config.kl.beta


def test_masked_reconstruction_ignores_empty_cells(config):
    torch.manual_seed(0)
    model = GridVAE(config, (3, 2, 4), (0.1, 2.0)).eval()
    x = torch.zeros(2, 3, 2, 4)
    x[:, 0, 0, 0] = 1.0  # one onset per window
    output = model.decode_raw(torch.zeros(2, config.latent_dim))
    masked = FAMILY.reconstruction(
        model, x, output, config.model_copy(update={"mask_to_onsets": True})
    )
    unmasked = FAMILY.reconstruction(
        model, x, output, config.model_copy(update={"mask_to_onsets": False})
    )
    out = model.activate(output)
    assert masked["velocity"][0].item() == pytest.approx(
        ((out[0, 1, 0, 0] - x[0, 1, 0, 0]) ** 2).item()
    )
    assert (unmasked["velocity"] > masked["velocity"]).all()
    assert torch.equal(masked["onset"], unmasked["onset"])


def test_onset_scores():
    true = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 1, 0]], dtype=bool)
    scores = grid_vae._onset_scores(true, pred)
    assert scores == {"onset_precision": 0.5, "onset_recall": 0.5, "onset_f1": 0.5}
    assert grid_vae._onset_scores(true, np.zeros_like(pred))["onset_f1"] == 0.0


def history(config, **columns) -> pd.DataFrame:
    epochs = config.kl.start_epoch + config.kl.anneal_epochs + 4
    base = {
        "epoch": np.arange(epochs, dtype=float),
        "val_loss": np.linspace(2, 1, epochs),
        "val_active_units": 2.0,
        "val_kl_dim_0": 1.0,
        "val_kl_dim_1": 1.0,
        "timeshift_std_ratio": 0.9,
        "timeshift_variance": 0.3,
        "prior_diversity_ratio": 0.9,
        "prior_density_ratio": 1.0,
        "prior_matching_threshold": 0.2,
    }
    return pd.DataFrame(base | columns)


def sick(h: pd.DataFrame, config, params) -> list:
    return fired(FAMILY.verdicts(h, FAMILY.judge(config, params.diagnosis, "rhythm_vae")))


def test_a_healthy_history_draws_no_verdict_and_keeps_every_measure(config, params):
    judged = FAMILY.verdicts(history(config), FAMILY.judge(config, params.diagnosis, "rhythm_vae"))
    assert fired(judged) == []
    assert {v.name for v in judged} == {
        "posterior_collapse",
        "timeshift_collapse",
        "mode_collapse",
        "prior_density",
    }
    (density,) = [v for v in judged if v.name == "prior_density"]
    assert density.value == 1.0 and density.limit == params.diagnosis.density_ratio


def test_the_prior_density_remedy_decodes_at_the_matching_threshold_at_most_its_param(
    config, params
):
    """The doctor measured the old remedy (threshold x density) overshooting: rhythm_vae 2.0x the
    data's onsets at 0.2, 8.9x too few at 0.403. The remedy now takes the threshold at which the
    prior samples held the data's density."""
    h = history(config, prior_density_ratio=2.0, prior_matching_threshold=0.2641)
    (verdict,) = sick(h, config, params)
    assert verdict.name == "prior_density"
    assert verdict.overrides == {"variants.rhythm_vae.onset_threshold": 0.264}
    (capped,) = sick(
        history(config, prior_density_ratio=50.0, prior_matching_threshold=0.99), config, params
    )
    ceiling = params.diagnosis.remedies.onset_threshold_max
    assert capped.overrides == {"variants.rhythm_vae.onset_threshold": ceiling}


def test_remedies_climb_the_ladder_and_never_repeat_a_setting_in_force(config, params):
    """timeshift_collapse's ladder is timeshift_weight, slower_kl, onset_mask: the first proposes a
    larger weight; with it stepped as far as the doctor allows (skipped), the next is slower KL
    annealing; mask_to_onsets is already true, so nothing is left after that."""
    (verdict,) = sick(history(config, timeshift_std_ratio=0.1), config, params)
    assert verdict.name == "timeshift_collapse" and verdict.rung == "timeshift_weight"
    weight = verdict.overrides["variants.rhythm_vae.loss.timeshift"]
    assert set(verdict.overrides) == {"variants.rhythm_vae.loss.timeshift"}
    assert f"loss.timeshift {config.loss.timeshift:g} -> {weight:g}" in verdict.remedy
    judge = FAMILY.judge(config, params.diagnosis, "rhythm_vae")
    rung, words, overrides = judge.prescribe("timeshift_collapse", skip={"timeshift_weight"})
    anneal = overrides["variants.rhythm_vae.kl.anneal_epochs"]
    assert (
        rung == "slower_kl" and f"kl.anneal_epochs {config.kl.anneal_epochs} -> {anneal}" in words
    )
    assert config.mask_to_onsets
    assert judge.prescribe("timeshift_collapse", skip={"timeshift_weight", "slower_kl"}) == (
        "",
        "nothing left to try on diagnosis.ladders.timeshift_collapse",
        {},
    )
