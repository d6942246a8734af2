"""The family registry: every module of this package that defines `FAMILY` (an etude.family.Family).

A new family is one module here plus its entries in params.yaml; nothing else lists families.
Modules and packages without `FAMILY` (vae.py, next_note/) hold code that families share.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from etude.family import Family


@cache
def families() -> dict[str, Family]:
    found: dict[str, Family] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            if family.name in found:
                raise TypeError(f"{module.__file__}: family name {family.name!r} is already taken")
            found[family.name] = family
    return found


def family_named(name: str) -> Family:
    return families()[name]
