"""What every stage entry point shares: argument parsing, typed params, clear errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from etude.errors import EtudeError
from etude.params import Params, ParamsError
from etude.variants import load, variant_config

# What a user fixes in a file or a parameter: one line, no traceback. FileNotFoundError: an input
# that an earlier stage did not write. Every other exception is a bug and keeps its traceback.
USER_ERRORS = (ParamsError, EtudeError, FileNotFoundError)


def stage_main(
    name: str, body: Callable[[Params, str | None], None], per_variant: bool = False
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}")
    if per_variant:
        parser.add_argument("--variant", required=True, help="a key of `variants:` in params.yaml")
    args = parser.parse_args()
    try:
        params = load()
        variant = getattr(args, "variant", None)
        if variant is not None:
            variant_config(params, variant)  # unknown name: fails here, with the nearest valid one
        body(params, variant)
    except USER_ERRORS as err:
        sys.exit(f"{name}: error: {err}")
