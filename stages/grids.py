"""grids: RhythmVAE and MelodyVAE grids, with each piece's beat grid and where its tempo came from;
pieces without a window are skipped and recorded in each output. A representation with no window
left (melody grids of a drum corpus) is written empty and a warning says why: only the variants that
read it stop, at configure."""

from pathlib import Path

import pandas as pd

from etude import grids
from etude.cli import stage_main
from etude.pipeline import GRID_KINDS, GRIDS, NOTES, PIECES
from etude.skips import empty_warning


def run(params, _variant):
    notes, pieces = pd.read_parquet(NOTES), pd.read_parquet(PIECES)
    built = {r: grids.build(notes, pieces, params.grid, r) for r in GRID_KINDS}
    # One line per piece and reason: most pieces are skipped by every representation alike.
    skipped = pd.concat([g.skipped.assign(representation=r) for r, g in built.items()])
    for (path, reason), group in skipped.groupby(["path", "reason"], sort=False):
        only = "" if len(group) == len(built) else f" ({', '.join(group['representation'])} only)"
        print(f"grids: skipped {path}: {reason}{only}")
    for representation, gridset in built.items():
        target = Path(GRIDS.format(representation=representation))
        gridset.save(target)
        if gridset.empty:
            print(empty_warning("grids", str(target), gridset.what, gridset.skipped))
        sources = gridset.tempo["source"].value_counts().to_dict()
        print(
            f"grids: {len(gridset.grids)} {representation} windows {gridset.grids.shape[1:]} from "
            f"{len(gridset.tempo)} pieces, {len(gridset.skipped)} skipped, "
            f"tempo {sources} -> {target}"
        )


if __name__ == "__main__":
    stage_main("grids", run)
