"""train@VARIANT: train one variant; resumes from its last checkpoint after an interruption."""

from pathlib import Path

from etude import tracking
from etude.cli import stage_main
from etude.models import family
from etude.params import read_variant_config
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


def run(params, variant):
    config = read_variant_config(path_for(CONFIG, variant))
    paths = TrainPaths(data=Path(variant_input(config)), model_dir=path_for(MODEL_DIR, variant),
                       history=path_for(HISTORY, variant), summary=path_for(TRAIN_METRICS, variant),
                       run_link=path_for(RUN_LINK, variant, stage="train"),
                       checkpoints=tracking.project_root() / "checkpoints")
    train(variant, config, family(config.model), params.tracking.experiment, paths, params.diagnosis)


if __name__ == "__main__":
    stage_main("train", run, per_variant=True)
