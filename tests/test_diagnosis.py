"""Verdicts: each pathology, set up in a short real training (a huge lr, a large beta, no patience,
...), is diagnosed with its evidence and a remedy command; the same short training with the
default configuration is not. Thresholds that a short training cannot reach honestly (timing
spread, repetition) are checked on the family's verdict rules with histories that show them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etude import params as P
from etude.diagnosis import Verdict, training_verdicts
from etude.models import family
from etude.pipeline import variant_input
from etude.training import TrainPaths, train
from tests.conftest import REPO, edit_params, make_project, run

SHORT = {"epochs": 4, "samples_per_epoch": 512, "val_max_windows": 128, "threads": 1}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project copy with its representations built once."""
    project = make_project(tmp_path_factory.mktemp("diagnosis"))
    run(["dvc", "repro", "tokenize", "grids", "mel"], project)
    return project


def diagnose(project: Path, variant: str, overrides: dict, tag: str) -> dict[str, Verdict]:
    """Train `variant` with `overrides` in-process; its verdicts by name, as train.json holds them."""
    path = project / f"params-{tag}.yaml"
    path.write_text((project / "params.yaml").read_text())
    edit_params(path, {"variants": {variant: overrides}})
    params = P.load(path)
    config = params.variant(variant)
    out = project / "runs-diagnosis" / tag
    cwd = Path.cwd()
    os.chdir(project)  # the MLflow store is the project's
    try:
        train(variant, config, family(config.model), "diagnosis", TrainPaths(
            data=project / variant_input(config), model_dir=out / "model", history=out / "history.csv",
            summary=out / "train.json", run_link=out / "run.json", checkpoints=out / "checkpoints"),
            params.diagnosis, progress_bar=False)
    finally:
        os.chdir(cwd)
    verdicts = [Verdict.from_dict(v) for v in json.loads((out / "train.json").read_text())["diagnosis"]]
    return {v.name: v for v in verdicts}


def check_command(verdict: Verdict, variant: str) -> None:
    """The remedy is a `dvc exp run` line whose overrides name this variant's settings."""
    assert verdict.command.startswith("dvc exp run -S ++variants.")
    assert all(k.startswith(f"variants.{variant}.") for k in verdict.overrides)


INSTABILITY = {"non_finite_loss", "loss_spike", "gradient_explosion", "rising_loss"}


def test_huge_lr_is_unstable_and_the_default_lr_is_not(project):
    unstable = diagnose(project, "rnn_baseline", SHORT | {"lr": 5.0, "grad_clip": None}, "huge-lr")
    found = INSTABILITY & set(unstable)
    assert found, f"no instability verdict among {sorted(unstable)}"
    verdict = unstable[sorted(found)[0]]
    check_command(verdict, "rnn_baseline")
    assert verdict.overrides["variants.rnn_baseline.lr"] == 1.0 and verdict.epoch is not None
    healthy = diagnose(project, "rnn_baseline", SHORT, "default-lr")
    assert not INSTABILITY & set(healthy), sorted(healthy)


def test_no_patience_is_a_premature_stop(project):
    # Any improvement below min_delta counts as none: patience 1 stops after the second epoch.
    stopped = diagnose(project, "rnn_baseline", SHORT | {"epochs": 10, "patience": 1, "min_delta": 10.0}, "no-patience")
    assert stopped["premature_stop"].overrides == {"variants.rnn_baseline.patience": 11}
    assert "after 2 of 10 epochs" in stopped["premature_stop"].evidence
    healthy = diagnose(project, "rnn_baseline", SHORT | {"epochs": 10, "patience": 8}, "patience")
    assert "premature_stop" not in healthy


def test_large_beta_collapses_the_posterior_and_the_prior_samples(project):
    collapsed = diagnose(project, "rhythm_vae", SHORT | {"kl": {"beta": 200.0, "anneal_epochs": 0}}, "large-beta")
    assert "posterior_collapse" in collapsed, sorted(collapsed)
    check_command(collapsed["posterior_collapse"], "rhythm_vae")
    assert "0/2 active units" in collapsed["posterior_collapse"].evidence
    healthy = diagnose(project, "rhythm_vae", SHORT | {"kl": {"anneal_epochs": 0}}, "default-beta")
    assert not {"posterior_collapse", "mode_collapse"} & set(healthy), sorted(healthy)


def test_spectral_vae_at_a_huge_lr_is_featureless_or_out_of_range(project):
    spectral = {"epochs": 2, "samples_per_epoch": 16, "batch_size": 8, "val_max_windows": 8, "threads": 1}
    broken = diagnose(project, "spectral_vae", spectral | {"lr": 0.02, "grad_clip": None}, "spectral-huge-lr")
    found = {"featureless", "range_mismatch", "non_finite_loss"} & set(broken)
    assert found, sorted(broken)
    healthy = diagnose(project, "spectral_vae", spectral, "spectral-default")
    assert not {"range_mismatch", "non_finite_loss"} & set(healthy), sorted(healthy)


# ---- rules on histories that show what a short training cannot ----------------------------------
def history(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"epoch": np.arange(n, dtype=float), **columns})


@pytest.fixture(scope="module")
def settings() -> P.Diagnosis:
    return P.load().diagnosis


def test_generic_rules_name_the_epoch_and_the_remedy(settings, params):
    config = params.variant("rnn_baseline")
    falling = np.linspace(1.0, 0.5, 9)
    summary = {"best_epoch": 8, "epochs_run": 9, "stopped_early": False}
    assert training_verdicts("v", history(train_loss=falling, val_loss=falling), summary, config, settings) == []

    flat = np.r_[np.linspace(1.0, 0.5, 6), [0.5, 0.5, 0.5]]
    plateau = training_verdicts("v", history(train_loss=flat, val_loss=flat, lr=np.full(9, config.lr)), summary,
                                config, settings)
    assert [v.name for v in plateau] == ["plateau"] and plateau[0].overrides == {"variants.v.lr": 0.01}

    spike = np.r_[falling[:4], [2.0], falling[5:]]
    (verdict,) = training_verdicts("v", history(train_loss=spike, val_loss=falling), summary, config, settings)
    assert (verdict.name, verdict.epoch, verdict.overrides) == ("loss_spike", 5, {"variants.v.lr": 0.001})

    norms = np.r_[[1.0, 1.2, 0.9, 1.1], [50.0], [1.0] * 4]
    names = [v.name for v in training_verdicts("v", history(train_loss=falling, val_loss=falling, grad_norm=norms,
                                                            grad_norm_max=norms), summary, config, settings)]
    assert names == ["gradient_explosion"]

    rising = np.r_[falling[:5], [0.8, 0.9, 1.0, 1.1]]
    both = history(train_loss=rising, val_loss=rising)
    assert [v.name for v in training_verdicts("v", both, summary, config, settings)] == ["rising_loss"]
    overfit = history(train_loss=falling, val_loss=rising)
    assert [v.name for v in training_verdicts("v", overfit, summary, config, settings)] == ["overfitting"]


def test_note_rnn_rules_timing_collapse_and_repetition(settings, params):
    config = params.variant("rnn_stacked")
    note_rnn = family("note_rnn")
    healthy = history(val_loss=[1.0, 0.9], sample_step_std_ratio=[0.6, 0.7], sample_duration_std_ratio=[0.6, 0.7],
                      sample_ngram_repetition=[0.1, 0.1], data_ngram_repetition=[0.1, 0.1],
                      sample_repeated_pitch_rate=[0.02, 0.02], data_repeated_pitch_rate=[0.02, 0.02],
                      sample_diversity_ratio=[0.9, 0.9])
    assert note_rnn.diagnose("rnn_stacked", healthy, config, settings) == []
    sick = healthy.assign(sample_step_std_ratio=[0.6, 0.27], sample_ngram_repetition=[0.1, 0.6])
    verdicts = {v.name: v for v in note_rnn.diagnose("rnn_stacked", sick, config, settings)}
    assert set(verdicts) == {"step_collapse", "repetitive_generation"}
    assert verdicts["step_collapse"].epoch == 2 and "0.27x" in verdicts["step_collapse"].evidence
    assert verdicts["step_collapse"].command == "dvc exp run -S ++variants.rnn_stacked.seq_len=100"


def test_a_remedy_command_is_what_dvc_exp_run_applies(tmp_path):
    """`-S ++key=value` sets a key that the variant's entry lacks; DVC's own override code (what
    `dvc exp run -S` calls) applies the printed overrides to params.yaml as intended."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    verdict = Verdict("timeshift_collapse", "e", "r", {"variants.rhythm_vae.kl.anneal_epochs": 40,
                                                       "variants.rhythm_vae.loss.timeshift": 2.667})
    apply_overrides(path, [arg for arg in verdict.command.split()[3:] if arg != "-S"])
    edited = P.load(path).variant("rhythm_vae")
    assert edited.kl.anneal_epochs == 40 and edited.loss.timeshift == pytest.approx(2.667)
    assert edited.kl.beta == P.load(REPO / "params.yaml").variant("rhythm_vae").kl.beta  # the rest is kept
