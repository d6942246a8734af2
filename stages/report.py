"""report: reports/index.html (self-contained) and reports/summary.md comparing every variant."""

from pathlib import Path

import numpy as np
import pandas as pd

from etude import report
from etude.cli import stage_main
from etude.mel import MelSet
from etude.pipeline import (
    GRID_KINDS,
    MEL,
    NOTE_SEQUENCES,
    PIECES,
    REPORT_HTML,
    REPORT_MD,
    REPRESENTATIONS,
)
from etude.skips import skipped_from


def skipped_pieces() -> pd.DataFrame:
    """Pieces that ingest accepted and a later stage could not use, with the stage's reason."""
    tables = {}
    for stage, path in (
        ("tokenize", NOTE_SEQUENCES),
        *((f"grids ({k})", REPRESENTATIONS[k]) for k in GRID_KINDS),
    ):
        with np.load(path) as arrays:  # reads only the arrays asked for
            tables[stage] = skipped_from(arrays)
    tables["mel"] = MelSet(Path(MEL)).skipped
    return pd.concat([t.assign(stage=stage) for stage, t in tables.items()], ignore_index=True)


def run(params, _variant):
    report.build(
        params, pd.read_parquet(PIECES), skipped_pieces(), Path(REPORT_HTML), Path(REPORT_MD)
    )
    print(f"report: {REPORT_HTML}, {REPORT_MD}")


if __name__ == "__main__":
    stage_main("report", run)
