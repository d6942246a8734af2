"""The note Transformer and the distributional timing heads: the cache gives the model's own
answers, positions are relative, and a bins head keeps the spread an MSE head averages away."""

import math

import numpy as np
import pytest
import torch

from etude.models.next_note.heads import (
    TimingHeads,
    soft_labels,
    timing_bin,
    timing_edges,
    timing_heads,
)
from etude.models.next_note.task import sample
from etude.models.note_transformer import NoteTransformer, rotate, sample_uncached
from etude.variants import variant_config

STATS = {"step_mean": 0.1, "step_std": 0.25, "duration_mean": 0.18, "duration_std": 0.35}


@pytest.fixture(scope="module")
def config(params):
    return variant_config(params, "note_transformer").model_copy(
        update={"seq_len": 12, "d_model": 32, "layers": 2, "heads": 2, "dropout": 0.0}
    )


def notes(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pitch = torch.randint(21, 109, (batch, length, 1), generator=g).float()
    timing = torch.rand(batch, length, 2, generator=g) * torch.tensor([0.5, 1.0])
    return torch.cat([pitch, timing], dim=-1)


@pytest.mark.parametrize("timing_input", ["bins", "linear"])
def test_cached_steps_give_the_whole_window_answers(config, timing_input):
    torch.manual_seed(0)
    model = NoteTransformer(config.model_copy(update={"timing_input": timing_input}), STATS).eval()
    sequence = notes(3, config.seq_len)
    with torch.no_grad():
        whole, step, duration, _ = model(sequence, all_positions=True)
        *heads, cache = model(sequence[:, :4])
        for t in range(4, config.seq_len):
            *heads, cache = model(sequence[:, t : t + 1], cache)
            torch.testing.assert_close(heads[0], whole[:, t], atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(heads[1], step[:, t], atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(heads[2], duration[:, t], atol=2e-5, rtol=1e-5)


def test_rotary_attention_depends_on_distance_only(config):
    q, k = torch.randn(2, 2, 5, 16), torch.randn(2, 2, 5, 16)
    scores = lambda offset: (
        rotate(q, torch.arange(5) + offset, 1e4) @ rotate(k, torch.arange(5) + offset, 1e4).mT
    )
    torch.testing.assert_close(scores(0), scores(1000), atol=1e-3, rtol=1e-4)
    assert not torch.allclose(scores(0), q @ k.mT, atol=1e-3)


def test_the_cache_keeps_seq_len_notes_and_matches_rerunning_them_while_the_window_fills(config):
    torch.manual_seed(1)
    model = NoteTransformer(config, STATS).eval()
    seeds = notes(4, 5, seed=2)
    temperatures = torch.ones(4)
    # Until seed and samples outgrow seq_len, the window re-run sees exactly what the cache holds.
    fill = config.seq_len - seeds.shape[1]
    cached = sample(model, seeds, temperatures, fill, torch.Generator().manual_seed(3))
    rerun = sample_uncached(model, seeds, temperatures, fill, torch.Generator().manual_seed(3))
    torch.testing.assert_close(cached, rerun, atol=1e-5, rtol=1e-5)
    longer = sample(
        model, seeds, temperatures, 3 * config.seq_len, torch.Generator().manual_seed(3)
    )
    assert longer.shape == (4, 3 * config.seq_len, 3) and torch.isfinite(longer).all()
    # Past seq_len the cache is a sliding window: it never holds more than seq_len keys.
    with torch.no_grad():
        *_, cache = model(seeds)
        for note in longer[:, :20].unbind(1):
            *_, cache = model(note[:, None], cache)
    assert {k.shape[2] for k, _ in cache["layers"]} == {config.seq_len}


def test_timing_bins_cover_zero_to_max_and_clamp_beyond(config):
    edges = timing_edges(config.timing_bins)
    assert edges[0] == 0 and len(edges) == config.timing_bins.count + 1
    assert edges[1] == pytest.approx(config.timing_bins.min_s) and edges[-1] == pytest.approx(
        config.timing_bins.max_s
    )
    index = timing_bin(torch.tensor([0.0, config.timing_bins.min_s * 0.99, 1.0, 1e4]), edges)
    assert index[0] == 0 and index[1] == 0 and 0 < index[2] < config.timing_bins.count - 1
    assert index[3] == config.timing_bins.count - 1


def fit_constant_head(config, kind: str, targets: torch.Tensor) -> TimingHeads:
    """A timing head on a constant input learns the targets' marginal distribution (or their
    mean)."""
    torch.manual_seed(0)
    head = timing_heads(config.model_copy(update={"timing_head": kind}), 4)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    hidden = torch.ones(len(targets), 4)
    for _ in range(300):
        loss = head.loss(head(hidden)[0], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head


def test_a_bins_head_samples_the_spread_that_an_mse_head_averages_away(config):
    """Bimodal steps (chord notes and beats): the MSE head answers their mean every time."""
    g = torch.Generator().manual_seed(0)
    targets = torch.where(torch.rand(4096, generator=g) < 0.5, 0.01, 0.5) * (
        1 + 0.1 * torch.rand(4096, generator=g)
    )
    ratios, medians = {}, {}
    for kind in ("mse", "bins"):
        head = fit_constant_head(config, kind, targets)
        with torch.no_grad():
            output = head(torch.ones(4096, 4))[0]
            drawn = head.draw(output, torch.ones(4096), torch.Generator().manual_seed(1))
            medians[kind] = head.point(output)[0][0].item()
        ratios[kind] = (drawn.std() / targets.std()).item()
    assert ratios["mse"] < 0.05, ratios
    assert 0.8 < ratios["bins"] < 1.25, ratios
    # The bins head's median is one of the two modes, not the empty middle the MSE head answers.
    assert min(abs(medians["bins"] - 0.0105), abs(medians["bins"] - 0.525)) < 0.05, medians
    assert abs(medians["mse"] - targets.mean().item()) < 0.02, medians


def test_the_point_answers_of_a_bins_head(config):
    head = timing_heads(config, 4)
    edges = head.edges
    logits = torch.full((1, config.timing_bins.count), -1e9)
    logits[0, 40] = 0.0  # all mass in bin 40
    median, mean = head.point(logits)
    assert edges[40] <= median.item() <= edges[41]
    assert mean.item() == pytest.approx(((edges[40] + edges[41]) / 2).item(), rel=1e-6)
    drawn = head.draw(logits.expand(256, -1), torch.ones(256), torch.Generator().manual_seed(0))
    assert ((drawn >= edges[40]) & (drawn < edges[41])).all()
    assert np.unique(drawn.numpy()).size > 200  # uniform within the bin, not its centre


def test_soft_labels_spread_a_target_over_neighbouring_bins_only():
    assert torch.equal(soft_labels(8, 0.0), torch.eye(8))
    targets = soft_labels(32, 2.0)
    assert torch.allclose(targets.sum(1), torch.ones(32))
    assert torch.equal(targets.argmax(1), torch.arange(32))
    assert (
        targets[16, 15] == pytest.approx(targets[16, 17].item())
        and targets[16, 15] > targets[16, 13] > 0
    )
    assert targets[16, 0] < 1e-6  # a far bin is a wrong answer still


def test_a_soft_target_head_is_less_sure_of_one_repeated_value(config):
    """One value over and over: a one-hot target drives its bin towards certainty; a soft one keeps
    about the Gaussian's share of the mass there, and the rest on its neighbours."""
    targets = torch.full((512,), 0.2)
    sure = {}
    for width in (0.0, 1.5):
        bins = config.timing_bins.model_copy(update={"soft_label_width": width})
        head = fit_constant_head(config.model_copy(update={"timing_bins": bins}), "bins", targets)
        with torch.no_grad():
            sure[width] = torch.softmax(head(torch.ones(1, 4))[0], -1).max().item()
    interior_peak = 1 / (math.sqrt(2 * math.pi) * 1.5)
    assert sure[0.0] > 0.95 and sure[1.5] == pytest.approx(interior_peak, abs=0.02), sure
