"""The typed params loader: every mistake stops the run before work, naming the key."""

import shutil

import pytest

from etude import params as P
from etude import variants as V
from etude.variants import variant_config
from tests.conftest import REPO, edit_params


@pytest.fixture
def params_file(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", target)
    return target


def test_default_params_load_and_variants_resolve(params):
    baseline, stacked = (
        variant_config(params, "rnn_baseline"),
        variant_config(params, "rnn_stacked"),
    )
    assert baseline.lr == 0.005 and baseline.seq_len == 25 and baseline.lstm_units == [128]
    assert baseline.loss_weights.pitch == 0.05 and baseline.transpose_semitones == 0
    # rnn_stacked sets no lr: it takes the shared default; it overrides one loss weight only.
    assert stacked.lr == params.lr == 0.001
    assert stacked.lstm_units == [256, 128] and stacked.dropout == 0.3 and stacked.seq_len == 50
    assert stacked.loss_weights.pitch == 0.5 and stacked.loss_weights.step == 1.0
    assert (
        stacked.lr_schedule.kind == "plateau"
        and stacked.lr_schedule.factor == params.lr_schedule.factor
    )


def test_exp_run_scientific_notation_loads_as_number(params_file):
    params_file.write_text(params_file.read_text().replace("\nlr: 0.001", "\nlr: 1e-05"))
    params = V.load(params_file)
    assert params.lr == 1e-05 and isinstance(variant_config(params, "rnn_stacked").lr, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"ingest": {"wrokers": 2}}, "ingest.wrokers: unknown key; did you mean 'workers'?"),
        (
            {"variants": {"rnn_stacked": {"lrr": 0.1}}},
            "variants.rnn_stacked.lrr: unknown key; did you mean 'lr'?",
        ),
        ({"lr": -1}, "lr: Input should be greater than 0"),
        ({"batch_size": "many"}, "batch_size: Input should be a valid integer"),
        (
            {"lr_schedule": {"kind": "cosine"}},
            "lr_schedule.kind: Input should be 'none', 'plateau' or 'step'",
        ),
        (
            {"variants": {"rnn_stacked": {"dropout": 1.5}}},
            "variants.rnn_stacked.dropout: Input should be less than 1",
        ),
        ({"variants": {"rnn_x": {"model": "note_rn"}}}, "did you mean 'note_rnn'?"),
        ({"data": {"source": "maestro"}}, "data.path is required when data.source is 'maestro'"),
        (
            {"data": {"midi_dir_split": {"validation": 0.6, "test": 0.5}}},
            "validation + test must be below 1",
        ),
        (
            {"diagnosis": {"ladders": {"plateau": ["slower_dcay"]}}},
            "diagnosis.ladders.plateau: no remedy 'slower_dcay'; did you mean 'slower_decay'?",
        ),
        (
            {"doctor": {"loss_settings": ["spectral_wieght"]}},
            "doctor.loss_settings: no model setting 'spectral_wieght'; did you mean "
            "'spectral_weight'?",
        ),
    ],
)
def test_invalid_params_are_named(params_file, override, message):
    edit_params(params_file, override)
    with pytest.raises(P.ParamsError) as err:
        V.load(params_file)
    assert message in str(err.value)


def test_missing_key_is_reported(params_file):
    params_file.write_text(params_file.read_text().replace("grad_clip: 1.0", ""))
    with pytest.raises(P.ParamsError, match="grad_clip: required key is missing"):
        V.load(params_file)


def test_unknown_variant_name_suggests_nearest(params):
    with pytest.raises(P.ParamsError, match="did you mean 'rnn_stacked'"):
        variant_config(params, "rnn_stacke")


def test_config_hash_changes_only_with_effective_config(params_file):
    before = V.load(params_file)
    edit_params(params_file, {"lr": 0.0005})
    after = V.load(params_file)
    # rnn_baseline sets its own lr: its effective configuration, hence its hash, is unchanged.
    assert V.config_hash(variant_config(before, "rnn_baseline")) == V.config_hash(
        variant_config(after, "rnn_baseline")
    )
    assert V.config_hash(variant_config(before, "rnn_stacked")) != V.config_hash(
        variant_config(after, "rnn_stacked")
    )
