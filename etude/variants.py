"""The loader every stage and the Snakefile use: params.yaml with the families' sections and
variants.

A variant's effective configuration is the shared training defaults, overlaid with its model
family's section under `models:`, overlaid with the variant's own entry under `variants:`, and
validated against the family's `Config`. The configure stage writes it to configs/<variant>.json,
which every later per-variant stage reads back with `read_config`.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError, create_model

from etude.diagnosis import SHARED_REMEDIES
from etude.models import families
from etude.params import (
    PARAMS_FILE,
    TRAINING_KEYS,
    Params,
    ParamsError,
    Training,
    deep_merge,
    describe,
    parse,
    parse_text,
    plain,
    suggest,
)


def load(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml, every family section and every variant, before any work."""
    params = parse(path)
    check(params, Path(path))
    return params


def load_text(text: str, source: Path | str) -> Params:
    """`load` for YAML text; `source` names it in errors."""
    params = parse_text(text, source)
    check(params, source)
    return params


def check(params: Params, source: Path | str) -> None:
    """Every family has its section under `models:`, valid against its Config; every variant
    resolves."""
    known = families()
    for name in params.models:
        if name not in known:
            raise ParamsError(
                f"{source}: models.{name}: no such model family{suggest(name, known)}"
            )
    for name, family in known.items():
        if name not in params.models:
            raise ParamsError(
                f"{source}: models.{name}: required section is missing (family {name} is installed)"
            )
        try:
            family.Config.model_validate(params.models[name])
        except ValidationError as err:
            raise ParamsError(
                describe(err, family.Config, prefix=f"models.{name}.", source=source)
            ) from None
    remedies = set(SHARED_REMEDIES).union(*(family.remedies for family in known.values()))
    for verdict, ladder in params.diagnosis.ladders.items():
        for rung in ladder:
            if rung not in remedies:
                raise ParamsError(
                    f"{source}: diagnosis.ladders.{verdict}: no remedy {rung!r}"
                    f"{suggest(rung, remedies)}"
                )
    fields = set().union(*(family.Config.model_fields for family in known.values()))
    for setting in params.doctor.loss_settings:
        if setting.split(".")[0] not in fields:
            raise ParamsError(
                f"{source}: doctor.loss_settings: no model setting {setting!r}"
                f"{suggest(setting, fields)}"
            )
    for name in params.variants:
        variant_config(params, name)


def variant_config(params: Params, name: str) -> BaseModel:
    """The effective configuration of one variant (defaults, family section, overrides)."""
    if name not in params.variants:
        raise ParamsError(f"params.yaml: no variant {name!r}{suggest(name, params.variants)}")
    overrides = params.variants[name]
    family = overrides.get("model")
    known = families()
    if family not in known:
        raise ParamsError(
            f"params.yaml: variants.{name}.model is {family!r}; "
            f"expected one of {sorted(known)}{suggest(str(family), known)}"
        )
    merged = deep_merge(
        {k: plain(getattr(params, k)) for k in TRAINING_KEYS}, params.models[family]
    )
    merged = deep_merge(merged, overrides)
    cls = variant_class(family)
    try:
        return cls.model_validate(merged)
    except ValidationError as err:
        raise ParamsError(describe(err, cls, prefix=f"variants.{name}.")) from None


@cache
def variant_class(family: str) -> type[BaseModel]:
    """A family's variant configuration: the shared training settings, its Config, and `model`."""
    config = families()[family].Config
    name = f"{config.__name__.removesuffix('Config')}Variant"
    return create_model(name, __base__=(Training, config), model=(Literal[family], ...))


def config_hash(config: BaseModel) -> str:
    """Short stable hash of an effective configuration: names its checkpoints and MLflow runs."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def config_json(config: BaseModel) -> str:
    """The text of configs/<variant>.json (and of a model card's configuration)."""
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def read_config(path: Path) -> BaseModel:
    """A configuration written by the configure stage: what per-variant stages depend on and use."""
    try:
        raw = json.loads(Path(path).read_text())
        return variant_class(raw["model"]).model_validate(raw)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run the configure stage first") from None
    except (ValidationError, KeyError, json.JSONDecodeError) as err:
        raise ParamsError(f"{path}: invalid configuration: {err}") from None
