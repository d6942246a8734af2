"""train@VARIANT: train one variant; resumes from its last checkpoint after an interruption."""

from pathlib import Path

from etude import tracking
from etude.cli import stage_main
from etude.models import family_named
from etude.pipeline import (
    CONFIG,
    HISTORY,
    MODEL_DIR,
    RUN_LINK,
    TRAIN_METRICS,
    path_for,
    variant_input,
)
from etude.training import TrainPaths, train
from etude.variants import read_config


def run(params, variant):
    config = read_config(path_for(CONFIG, variant))
    paths = TrainPaths(
        data=Path(variant_input(config)),
        model_dir=path_for(MODEL_DIR, variant),
        history=path_for(HISTORY, variant),
        summary=path_for(TRAIN_METRICS, variant),
        run_link=path_for(RUN_LINK, variant, stage="train"),
        root=tracking.project_root(),
    )
    train(
        variant,
        config,
        family_named(config.model),
        params.tracking.experiment,
        paths,
        params.diagnosis,
        params.generate,
    )


if __name__ == "__main__":
    stage_main("train", run, per_variant=True)
