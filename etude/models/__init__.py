"""Model families. A family is one module exposing:

load_data(config), build(config, data), train_batches(data, config, epoch, device),
eval_batches(data, config, split, limit, device), loss(model, batch, config, epoch),
evaluate(model, data, config, settings, device), generate(model, data, config, settings, out_dir, device),
and optionally diagnostics(model, data, config, epoch, device): extra per-epoch history columns.
A new family is one module here and one entry below. VAE families share etude/models/vae.py.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = {"note_rnn": "etude.models.note_rnn", "grid_vae": "etude.models.grid_vae",
            "spectral_vae": "etude.models.spectral_vae"}


def family(name: str) -> ModuleType:
    return importlib.import_module(FAMILIES[name])
