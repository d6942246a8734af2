"""configure: write a variant's effective configuration; downstream stages depend on it, not on params."""

import json

from etude.cli import stage_main
from etude.params import config_hash
from etude.pipeline import CONFIG, path_for


def run(params, variant):
    config = params.variant(variant)
    target = path_for(CONFIG, variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    print(f"configure@{variant}: config {config_hash(config)} -> {target}")


if __name__ == "__main__":
    stage_main("configure", run, per_variant=True)
