"""tokenize: note sequences (pitch, step, duration) with training-split statistics."""

from pathlib import Path

import pandas as pd

from etude import sequences
from etude.cli import stage_main
from etude.pipeline import NOTE_SEQUENCES, NOTES, PIECES


def run(params, _variant):
    seqs = sequences.build(pd.read_parquet(NOTES), pd.read_parquet(PIECES), params.tokenize)
    seqs.save(Path(NOTE_SEQUENCES))
    print(f"tokenize: {len(seqs.pitch)} notes in {len(seqs.piece_ids)} pieces -> {NOTE_SEQUENCES}")


if __name__ == "__main__":
    stage_main("tokenize", run)
