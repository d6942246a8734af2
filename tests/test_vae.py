"""What every VAE family shares: the KL schedule, free bits, latent usage, and the loss as
reconstruction terms plus the scheduled KL term."""

import numpy as np
import pytest
import torch

from etude.models.grid_vae import FAMILY as GRID_VAE
from etude.models.grid_vae import GridVAE
from etude.models.vae import KlSchedule, kl_per_dim, kl_term, kl_weight, latent_stats
from etude.variants import variant_config


def schedule(**update) -> KlSchedule:
    base = {"beta": 0.5, "start_epoch": 2, "anneal_epochs": 4, "cyclical": False, "free_bits": 0.0}
    return KlSchedule(**base | update)


def test_kl_weight_waits_ramps_and_holds():
    kl = schedule()
    assert [kl_weight(kl, e) for e in range(8)] == [0.0, 0.0, 0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    assert kl_weight(kl, None) == 0.5  # validation: the schedule's final weight
    assert kl_weight(schedule(anneal_epochs=0), 2) == 0.5


def test_a_cyclical_schedule_restarts_its_ramp():
    kl = schedule(start_epoch=0, anneal_epochs=2, cyclical=True)
    assert [kl_weight(kl, e) for e in range(5)] == [0.0, 0.25, 0.0, 0.25, 0.0]


def test_free_bits_take_the_pressure_off_dimensions_below_the_floor():
    mu = torch.tensor([[0.1, 2.0], [-0.1, 2.0]])
    logvar = torch.zeros(2, 2)
    per_dim = kl_per_dim(mu, logvar).mean(0)
    assert per_dim[0] == pytest.approx(0.005) and per_dim[1] == pytest.approx(2.0)
    assert kl_term(mu, logvar, 0.0) == pytest.approx(2.005)
    assert kl_term(mu, logvar, 0.5) == pytest.approx(2.5)  # the small dimension counts as the floor


def test_active_units_count_dimensions_whose_mean_varies_across_inputs():
    rng = np.random.default_rng(0)
    mu = np.stack([rng.normal(size=64), np.full(64, 0.3)], axis=1).astype(np.float32)
    stats = latent_stats(mu, np.zeros_like(mu), active_threshold=0.01)
    assert stats["active_units"] == 1.0
    assert stats["kl"] == pytest.approx(stats["kl_dim_0"] + stats["kl_dim_1"])


def test_the_loss_is_the_weighted_sum_of_reconstruction_and_kl(params):
    config = variant_config(params, "rhythm_vae").model_copy(
        update={"encoder_units": 16, "decoder_units": 16, "head_units": 16}
    )
    torch.manual_seed(0)
    shape = (3, 4, 16)
    model = GridVAE(config, shape, (0.1, 2.0)).eval()  # eval: z = mu, no sampling noise
    x = (torch.rand(8, *shape) < 0.2).float()
    total, terms = GRID_VAE.loss(model, (x,), config, epoch=None)
    weights = GRID_VAE.loss_weights(model, config, None)
    assert set(terms) == {"onset", "velocity", "timeshift", "kl"}
    assert total.item() == pytest.approx(sum(weights[k] * terms[k].item() for k in terms), rel=1e-6)
    _, mu, logvar = model(x)
    assert terms["kl"].item() == pytest.approx(
        kl_term(mu, logvar, config.kl.free_bits).item(), rel=1e-6
    )
