"""evaluate@VARIANT: test-split metrics of the best checkpoint, beside trivial baselines."""

import json

from etude import tracking
from etude.cli import stage_main
from etude.models import family
from etude.params import config_hash, read_variant_config
from etude.pipeline import CONFIG, EVAL_METRICS, MODEL_DIR, RUN_LINK, path_for
from etude.training import load_weights, pick_device, seed_everything


def run(params, variant):
    config = read_variant_config(path_for(CONFIG, variant))
    seed_everything(config.seed, config.threads)
    module = family(config.model)
    device = pick_device(config.device)
    data = module.load_data(config)
    model = module.build(config, data)
    load_weights(path_for(MODEL_DIR, variant) / "best.pt", model)
    metrics = module.evaluate(model.to(device), data, config, params.evaluate.max_windows, device)
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
