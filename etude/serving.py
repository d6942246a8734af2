"""A trained model as an MLflow pyfunc whose `predict` generates (the family's `respond` hook).

train@V logs it as a LoggedModel named after the variant: the artifact `model` holds
model.safetensors and model.json byte for byte as models/V/ has them, the model_config the
`generate:` params its answers use (velocity, program, grid offset), the signature the family's
`request_fields`, and the requirements this installation's pins. It loads wherever etude is
installed, without a checkout:

    mlflow.pyfunc.load_model("models:/etude-rnn_baseline@champion").predict(
        {"primer": [[60, 0.0, 0.5]], "n_notes": 120, "temperature": 1.0, "seed": 1})

Bytes (a primer's or an answer's MIDI, an answer's WAV) travel as base64 strings, as JSON has no
bytes; `decoded_answer` turns an answer back.
"""

from __future__ import annotations

import base64
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from etude.model_card import MODEL_CARD, load_model
from etude.models import family_named
from etude.params import Generate
from etude.tracking import flatten, named_in_experiment, tracking_uri

MODEL_ARTIFACT = "model"
PACKAGE = "etude"


class Generator(mlflow.pyfunc.PythonModel):
    """Answers generation requests with the logged model; one answer per request row."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts[MODEL_ARTIFACT])
        self.config, self.family, self.model = load_model(folder)
        self.meta = json.loads((folder / MODEL_CARD).read_text())["meta"]
        self.settings = Generate.model_validate(context.model_config["generate"])

    def predict(self, context, model_input, params=None) -> list[dict[str, Any]]:
        return [
            wire(self.family.respond(self.model, self.config, self.meta, request, self.settings))
            for request in requests_of(model_input, self.family.request_fields)
        ]


def requests_of(model_input, fields: dict[str, tuple[str, bool]]) -> list[dict[str, Any]]:
    """Request dicts from what pyfunc passes (a DataFrame, a dict or a list of dicts): absent
    optional fields dropped, base64 bytes decoded."""
    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict("records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    else:
        rows = list(model_input)
    return [
        {
            key: base64.b64decode(value) if fields.get(key, ("",))[0] == "bytes" else value
            for key, value in row.items()
            if not _absent(value)
        }
        for row in rows
    ]


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def wire(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer as JSON can carry it: bytes as base64 strings, arrays as lists."""
    return {
        key: base64.b64encode(value).decode("ascii")
        if isinstance(value, bytes)
        else value.tolist()
        if isinstance(value, np.ndarray)
        else value
        for key, value in answer.items()
    }


def decoded_answer(answer: dict[str, Any], keys: tuple[str, ...] = ("midi", "wav")) -> dict:
    """`wire`'s inverse for the byte-valued keys of an answer."""
    return {k: base64.b64decode(v) if k in keys else v for k, v in answer.items()}


def signature(fields: dict[str, tuple[str, bool]]):
    """The input schema of a family's request fields."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    kinds = {
        "long": "long",
        "double": "double",
        "bytes": "string",
        "matrix": Array(Array("double")),
    }
    return ModelSignature(
        Schema(
            [ColSpec(kinds[kind], name, required=needed) for name, (kind, needed) in fields.items()]
        )
    )


def requirements() -> list[str]:
    """etude and its dependencies at the versions installed here (the pins of pyproject.toml)."""
    from packaging.requirements import Requirement

    pins = [f"{PACKAGE}=={metadata.version(PACKAGE)}"]
    for line in metadata.requires(PACKAGE) or []:
        requirement = Requirement(line)
        if requirement.marker is None:  # extras carry a marker
            pins.append(f"{requirement.name}=={metadata.version(requirement.name)}")
    return pins


def log(model_dir: Path, variant: str, config, settings) -> str:
    """Log models/`variant` to the active run as a LoggedModel named `variant` (`variant@<DVC
    experiment>` in one), its params the variant's effective configuration; its model id."""
    card = json.loads((Path(model_dir) / MODEL_CARD).read_text())
    family = family_named(card["family"])
    example = family.request_example(config, card["meta"])
    info = mlflow.pyfunc.log_model(
        name=named_in_experiment(variant),
        python_model=Generator(),
        artifacts={MODEL_ARTIFACT: str(model_dir)},
        model_config={"generate": settings.model_dump(mode="json")},
        signature=signature(family.request_fields),
        input_example=wire(example),
        pip_requirements=requirements(),
        params={k: str(v) for k, v in flatten(config.model_dump(mode="json")).items()},
        tags={"variant": variant, "family": family.name},
    )
    return info.model_id


def load_from_run(run_id: str, uri: str | None = None):
    """(config, family, model) of the LoggedModel a training run logged to `uri` (default: this
    project's store)."""
    mlflow.set_tracking_uri(uri or tracking_uri())
    found = mlflow.search_logged_models(
        experiment_ids=[mlflow.get_run(run_id).info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    if not found:
        raise LookupError(f"run {run_id}: no logged model")
    generator = mlflow.pyfunc.load_model(found[0].model_uri).unwrap_python_model()
    return generator.config, generator.family, generator.model
