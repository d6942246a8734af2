"""grids: RhythmVAE and MelodyVAE grids, with each piece's beat grid and where its tempo came from."""

from pathlib import Path

import pandas as pd

from etude import grids
from etude.cli import stage_main
from etude.pipeline import GRIDS, NOTES, PIECES, REPRESENTATIONS


def run(params, _variant):
    notes, pieces = pd.read_parquet(NOTES), pd.read_parquet(PIECES)
    for representation in REPRESENTATIONS:
        gridset = grids.build(notes, pieces, params.grid, representation)
        target = Path(GRIDS.format(representation=representation))
        gridset.save(target)
        sources = gridset.tempo["source"].value_counts().to_dict()
        print(f"grids: {len(gridset.grids)} {representation} windows {gridset.grids.shape[1:]}, tempo {sources} -> {target}")


if __name__ == "__main__":
    stage_main("grids", run)
