"""The report's tables across variants: each family's comparison, at the temperature nearest the
report's reference even when that one was not sampled, and the labels its family gives its
groups."""

from pathlib import Path

import pandas as pd
import pytest

from etude import report
from etude.family import Results
from etude.models import family_named
from etude.models.next_note.task import nearest_temperature
from etude.variants import variant_config


def next_note_result(name: str, temperatures: list[float]) -> Results:
    generation = {"test_step_std_ratio_low": 0.84, "test_step_std_ratio_high": 1.11}
    for t in temperatures:
        generation |= {f"t{t:g}_step_std_ratio": t, f"t{t:g}_duration_std_ratio": t / 2}
    music = {"groups": {f"t{t:g}": {"oa_mean": t / 10} for t in temperatures}, "ceiling": None}
    evaluation = {
        "model": {"pitch_cross_entropy": 3.5, "pitch_top1": 0.1},
        "baseline": {"pitch_top1": 0.05},
        "repeat_last": {"pitch_top1": 0.02},
        "windows": {"count": 10.0},
    }
    return Results(
        name, pd.DataFrame(), {}, evaluation, generation, music, pd.DataFrame(), Path("."), {}
    )


def test_nearest_temperature():
    assert nearest_temperature([0.8, 1.0, 1.5], 1.0) == 1.0
    assert nearest_temperature([0.8, 1.5, 2.0], 1.0) == 0.8
    assert nearest_temperature([1.5, 0.5], 1.0) == 0.5  # a tie: the lower one


@pytest.mark.parametrize(
    ("temperatures", "shown"),
    [([0.8, 1.0, 1.5, 2.0], 1.0), ([0.8, 1.5, 2.0], 0.8), ([1.25, 3.0], 1.25)],
)
def test_the_next_note_table_is_at_the_nearest_sampled_temperature(params, temperatures, shown):
    settings = params.model_copy(
        update={"generate": params.generate.model_copy(update={"temperatures": temperatures})}
    )
    names = ["rnn_baseline", "note_transformer", "rhythm_vae"]
    configs = {name: variant_config(params, name) for name in names}
    families = {name: family_named(configs[name].model) for name in names}
    results = [next_note_result(name, temperatures) for name in names]
    ((title, table),) = report.comparisons(results, families, configs, settings).items()
    assert (
        f"at temperature {shown:.1f}" in title
        if shown in (1.0, 0.8)
        else f"at temperature {shown:g}" in title
    )
    assert list(table.index) == ["rnn_baseline", "note_transformer"]  # grid VAEs have no such table
    assert table.loc["rnn_baseline", "step σ ratio"] == shown
    assert table.loc["note_transformer", "OA mean"] == pytest.approx(shown / 10)
    assert table.loc["rnn_baseline", "test excerpts' step σ ratio"] == "0.84–1.11"


def test_a_family_labels_its_reference_groups(params):
    family = family_named("note_rnn")
    table = report.variant_metrics_table(next_note_result("rnn_baseline", [1.0]), family)
    assert list(table.columns) == ["model", "baseline", "repeat last pitch"]
