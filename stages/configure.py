"""configure@VARIANT: write the variant's effective configuration, after checking that every split
of its data can serve it; downstream stages depend on the configuration, not on params."""

from pathlib import Path

from etude.cli import stage_main
from etude.models import family_named
from etude.pipeline import CONFIG, path_for, variant_input
from etude.variants import config_hash, config_json, variant_config


def run(params, variant):
    config = variant_config(params, variant)
    family = family_named(config.model)
    family.check_data(family.load_data(config, Path(variant_input(config))), config, variant)
    target = path_for(CONFIG, variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(config_json(config))
    print(f"configure@{variant}: config {config_hash(config)} -> {target}")


if __name__ == "__main__":
    stage_main("configure", run, per_variant=True)
