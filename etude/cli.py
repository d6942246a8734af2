"""What every stage entry point shares: argument parsing, typed params, clear errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from etude.params import Params, ParamsError, load


class StageError(RuntimeError):
    """A stage cannot do its work; the message names the file or parameter and what is wrong."""


def stage_main(name: str, body: Callable[[Params, str | None], None], per_variant: bool = False) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}")
    if per_variant:
        parser.add_argument("--variant", required=True, help="a key of `variants:` in params.yaml")
    args = parser.parse_args()
    try:
        params = load()
        variant = getattr(args, "variant", None)
        if variant is not None:
            params.variant(variant)  # unknown name: fails here, with the nearest valid one
        body(params, variant)
    except (ParamsError, StageError, FileNotFoundError, ValueError) as err:
        sys.exit(f"{name}: error: {err}")
