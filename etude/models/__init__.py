"""Model families. A family is one module exposing:

INPUTS, load_data(config), build(config, data), train_batches(data, config, epoch, device),
eval_batches(data, config, split, limit, device), loss(model, batch, config, epoch),
evaluate(model, data, config, limit, device), generate(model, data, config, settings, out_dir, device).
A new family is one module here and one entry below.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = {"note_rnn": "etude.models.note_rnn"}


def family(name: str) -> ModuleType:
    return importlib.import_module(FAMILIES[name])
