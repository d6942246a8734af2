"""evaluate@VARIANT: test-split metrics of the trained model, beside trivial baselines."""

import json
from pathlib import Path

from etude import tracking
from etude.cli import stage_main
from etude.model_card import load_trained
from etude.pipeline import (
    CONFIG,
    EVAL_METRICS,
    MODEL_DIR,
    PIECES,
    RUN_LINK,
    path_for,
    variant_input,
)
from etude.variants import config_hash, read_config


def run(params, variant):
    config = read_config(path_for(CONFIG, variant))
    with tracking.start_run(
        params.tracking.experiment,
        "evaluate",
        variant,
        path_for(RUN_LINK, variant, stage="evaluate"),
        params=config.model_dump(mode="json"),
        config_hash=config_hash(config),
    ):
        import mlflow

        trained = load_trained(path_for(MODEL_DIR, variant), Path(variant_input(config)))
        metrics = trained.family.evaluate(
            trained.model, trained.data, config, params.evaluate, trained.device
        )
        target = path_for(EVAL_METRICS, variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(metrics, indent=2) + "\n")
        test = tracking.test_dataset(Path(PIECES), params.data)
        mlflow.log_input(test, context="test")
        mlflow.log_metrics(tracking.flatten(metrics))
        # The training run's row, and its LoggedModel, then hold params, best validation loss and
        # test metrics together, the metrics linked to the test split.
        tracking.log_to_run(
            path_for(RUN_LINK, variant, stage="train"),
            {f"test.{k}": v for k, v in metrics["model"].items()},
            test,
        )
    print(f"evaluate@{variant}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics["model"].items()))


if __name__ == "__main__":
    stage_main("evaluate", run, per_variant=True)
