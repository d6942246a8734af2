"""`python -m etude doctor`: the `etude` command, run from the project directory."""

from etude.cli import main

main()
