"""evaluate@VARIANT: test-split metrics of the best checkpoint, beside trivial baselines."""

import json

from etude import tracking
from etude.cli import stage_main
from etude.models import family
from etude.params import config_hash, read_variant_config
from etude.pipeline import CONFIG, EVAL_METRICS, MODEL_DIR, RUN_LINK, path_for
from etude.training import load_trained


def run(params, variant):
    config = read_variant_config(path_for(CONFIG, variant))
    t = load_trained(config, family(config.model), path_for(MODEL_DIR, variant) / "best.pt")
    metrics = t.family.evaluate(t.model, t.data, config, params.evaluate, t.device)
    target = path_for(EVAL_METRICS, variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(metrics, indent=2) + "\n")
    with tracking.start_run(params.tracking.experiment, "evaluate", variant, path_for(RUN_LINK, variant, stage="evaluate"),
                            params=config.model_dump(mode="json"), config_hash=config_hash(config)):
        import mlflow

        mlflow.log_metrics(tracking.flatten(metrics))
    print(f"evaluate@{variant}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics["model"].items()))


if __name__ == "__main__":
    stage_main("evaluate", run, per_variant=True)
