"""What every stage entry point shares: argument parsing, typed params, clear errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from etude.device import stop_with_parent
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
    stop_with_parent()
    try:
        params = load()
        variant = getattr(args, "variant", None)
        if variant is not None:
            variant_config(params, variant)  # unknown name: fails here, with the nearest valid one
        body(params, variant)
    except USER_ERRORS as err:
        sys.exit(f"{name}: error: {err}")


def main(argv: list[str] | None = None) -> None:
    """`etude doctor`, `etude promote`: the project's commands beside the stages."""
    from etude import doctor

    parser = argparse.ArgumentParser(prog="etude")
    commands = parser.add_subparsers(dest="command", required=True)
    treat = commands.add_parser(
        "doctor",
        help="run each verdict's remedy as a DVC experiment and judge it against seed noise",
    )
    treat.add_argument("--variant", action="append", help="only this variant (repeatable)")
    treat.add_argument(
        "--exp", help="read the verdicts of this DVC experiment, not the workspace's"
    )
    treat.add_argument("--jobs", type=int, help="experiments at once (default: doctor.jobs)")
    crown = commands.add_parser(
        "promote",
        help="register each variant's model as etude-<variant>; move `champion` where it is better",
    )
    crown.add_argument("--variant", action="append", help="only this variant (repeatable)")
    args = parser.parse_args(argv)
    try:
        params = load()
        for name in args.variant or []:
            variant_config(params, name)
        if args.command == "promote":
            from etude import registry

            registry.promote(Path.cwd(), args.variant)
            return
        found = doctor.Doctor(Path.cwd(), args.variant, args.jobs, args.exp).run()
    except USER_ERRORS as err:
        sys.exit(f"etude {args.command}: error: {err}")
    except KeyboardInterrupt:
        sys.exit(130)
    print(doctor.summary_markdown(found))
