"""generate@VARIANT: samples (MIDI, or spectrograms and audio) with their statistics."""

import json
from pathlib import Path

from etude import audio, listen, tracking
from etude.cli import stage_main
from etude.model_card import load_trained
from etude.pipeline import (
    CONFIG,
    GENERATE_METRICS,
    MODEL_DIR,
    MUSIC_METRICS,
    PIECES,
    RUN_LINK,
    SAMPLES_DIR,
    path_for,
    variant_input,
)
from etude.variants import config_hash, read_config


def run(params, variant):
    config = read_config(path_for(CONFIG, variant))
    out_dir = path_for(SAMPLES_DIR, variant)
    with tracking.start_run(
        params.tracking.experiment,
        "generate",
        variant,
        path_for(RUN_LINK, variant, stage="generate"),
        params=config.model_dump(mode="json") | {"generate": params.generate.model_dump()},
        config_hash=config_hash(config),
    ):
        import mlflow

        trained = load_trained(path_for(MODEL_DIR, variant), Path(variant_input(config)))
        table, stats = trained.family.generate(
            trained.model, trained.data, config, params.generate, out_dir, trained.device
        )
        table.to_parquet(out_dir / "samples.parquet", index=False)
        midi_files = sorted(out_dir.glob("*.mid"))
        if midi_files:
            soundfont = audio.soundfont_path(params.audio)
            for midi in midi_files:
                listen.render_file(midi, params.audio, params.report.audio, soundfont)
        target = path_for(GENERATE_METRICS, variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(stats, indent=2) + "\n")
        mlflow.log_metrics(stats)
        # Symbolic samples against test excerpts, beside the ceiling; audio families have none.
        music = trained.family.judge_samples(trained.data, config, params.generate, table) or {
            "groups": {},
            "ceiling": None,
        }
        path_for(MUSIC_METRICS, variant).write_text(
            json.dumps(music, indent=2, allow_nan=False) + "\n"
        )
        mlflow.log_metrics(tracking.music_metrics(music))
        # OA against the test excerpts, beside the test metrics on the training run and its model.
        tracking.log_to_run(
            path_for(RUN_LINK, variant, stage="train"),
            tracking.music_metrics(music),
            tracking.test_dataset(Path(PIECES), params.data),
        )
        mlflow.log_artifacts(str(out_dir), artifact_path="samples")
    print(f"generate@{variant}: {table.groupby(['group', 'sample']).ngroups} samples -> {out_dir}")


if __name__ == "__main__":
    stage_main("generate", run, per_variant=True)
