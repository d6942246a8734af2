"""A trained model as the stage output models/<variant>/ holds it, and as MLflow logs it.

The folder holds only what rebuilding the model needs, written byte-for-byte the same by the same
training: the best weights (model.safetensors) and model.json (family, configuration, and the facts
from the data that `Family.build` needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from etude.device import pick_device, seed_everything
from etude.family import Family
from etude.models import family_named
from etude.variants import variant_class

WEIGHTS, MODEL_CARD = "model.safetensors", "model.json"


def save_model(folder: Path, family: Family, config, meta: dict, model: torch.nn.Module) -> None:
    """Weights and model card, byte-for-byte the same for the same training."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS)
    card = {"family": family.name, "config": config.model_dump(mode="json"), "meta": meta}
    (folder / MODEL_CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def load_model(folder: Path) -> tuple[Any, Family, torch.nn.Module]:
    """(config, family, model in eval mode on the CPU) from a folder written by save_model."""
    card = json.loads((Path(folder) / MODEL_CARD).read_text())
    family = family_named(card["family"])
    config = variant_class(card["family"]).model_validate(card["config"])
    model = family.build(config, card["meta"])
    model.load_state_dict(load_file(Path(folder) / WEIGHTS))
    return config, family, model.eval()


@dataclass
class Trained:
    """A trained variant with its data, ready for evaluation or sampling."""

    config: Any
    family: Family
    data: Any
    model: torch.nn.Module
    device: torch.device


def load_trained(model_dir: Path, data_path: Path) -> Trained:
    config, family, model = load_model(model_dir)
    seed_everything(config.seed, config.threads)
    device = pick_device(config.device)
    return Trained(config, family, family.load_data(config, data_path), model.to(device), device)
