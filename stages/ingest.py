"""ingest: parse every file into the notes and pieces tables; quarantine unusable files."""

from pathlib import Path

import pandas as pd

from etude.cli import stage_main
from etude.errors import StageError
from etude.ingest import QUARANTINED, NoUsableFiles, ingest
from etude.pipeline import NOTES, PIECES, RAW


def run(params, _variant):
    try:
        notes, pieces = ingest(pd.read_parquet(RAW), params.ingest)
    except NoUsableFiles as err:
        raise StageError(str(err)) from None
    Path(NOTES).parent.mkdir(parents=True, exist_ok=True)
    notes.to_parquet(NOTES, index=False)
    pieces.to_parquet(PIECES, index=False)
    bad = pieces[pieces["status"] == QUARANTINED]
    for row in bad.itertuples():
        print(f"ingest: quarantined {row.path}: {row.error}")
    print(f"ingest: {len(pieces) - len(bad)} pieces, {len(notes)} notes, {len(bad)} quarantined")


if __name__ == "__main__":
    stage_main("ingest", run)
