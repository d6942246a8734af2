"""tokenize: note sequences (pitch, step, duration) with training-split statistics; pieces without
pitched notes are skipped and recorded in the output. With none left (a drum corpus) the output is
written empty and a warning says why: only the variants that read it stop, at configure."""

from pathlib import Path

import pandas as pd

from etude import sequences
from etude.cli import stage_main
from etude.pipeline import NOTE_SEQUENCES, NOTES, PIECES
from etude.skips import empty_warning


def run(params, _variant):
    seqs = sequences.build(pd.read_parquet(NOTES), pd.read_parquet(PIECES), params.tokenize)
    seqs.save(Path(NOTE_SEQUENCES))
    for row in seqs.skipped.itertuples():
        print(f"tokenize: skipped {row.path}: {row.reason}")
    if seqs.empty:
        print(empty_warning("tokenize", NOTE_SEQUENCES, sequences.WHAT, seqs.skipped))
    print(
        f"tokenize: {len(seqs.pitch)} notes in {len(seqs.piece_ids)} pieces, "
        f"{len(seqs.skipped)} skipped "
        f"-> {NOTE_SEQUENCES}"
    )


if __name__ == "__main__":
    stage_main("tokenize", run)
