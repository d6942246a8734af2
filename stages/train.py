"""train@VARIANT: train one variant; resumes from its last checkpoint after an interruption."""

import json

from etude import tracking
from etude.cli import stage_main
from etude.models import family
from etude.params import read_variant_config
from etude.pipeline import CONFIG, HISTORY, MODEL_DIR, RUN_LINK, TRAIN_METRICS, path_for
from etude.training import train


def run(params, variant):
    config = read_variant_config(path_for(CONFIG, variant))
    state = train(variant, config, family(config.model), params.tracking.experiment,
                  out_dir=path_for(MODEL_DIR, variant), history_path=path_for(HISTORY, variant),
                  run_link=path_for(RUN_LINK, variant, stage="train"),
                  checkpoint_root=tracking.project_root() / "checkpoints")
    summary = {"best_val_loss": state.best_val, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
               "stopped_early": state.stopped_early}
    path_for(TRAIN_METRICS, variant).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    stage_main("train", run, per_variant=True)
