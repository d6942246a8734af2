"""configure@VARIANT: write the variant's effective configuration, after checking that every split
of its data can serve it; downstream stages depend on the configuration, not on params."""

import json
from pathlib import Path

from etude.cli import stage_main
from etude.models import family
from etude.params import config_hash
from etude.pipeline import CONFIG, path_for, variant_input


def run(params, variant):
    config = params.variant(variant)
    model_family = family(config.model)
    model_family.check_data(variant, config, model_family.load_data(config, Path(variant_input(config))))
    target = path_for(CONFIG, variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    print(f"configure@{variant}: config {config_hash(config)} -> {target}")


if __name__ == "__main__":
    stage_main("configure", run, per_variant=True)
