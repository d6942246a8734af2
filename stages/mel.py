"""mel: log-mel segments of every piece's audio (recording, else the MIDI rendered), in shards;
pieces without a non-silent segment are skipped and recorded in the pieces table."""

from pathlib import Path

import pandas as pd

from etude import mel
from etude.cli import stage_main
from etude.errors import StageError
from etude.pipeline import MEL, PIECES, RAW
from etude.sources import SourceError


def run(params, _variant):
    raw = pd.read_parquet(RAW, columns=["path", "data"])
    try:
        segments, pieces = mel.build(
            raw, pd.read_parquet(PIECES), params.audio, params.mel, Path(MEL)
        )
    except SourceError as err:  # the SoundFont could not be downloaded or verified
        raise StageError(str(err)) from None
    skipped = pieces["reason"].notna()
    for row in pieces[skipped].itertuples():
        print(f"mel: skipped {row.path}: {row.reason}")
    used = pieces[~skipped]
    sources = used.groupby("audio")["seconds"].sum().div(3600).round(3).to_dict()
    print(
        f"mel: {len(segments)} segments {params.mel.n_mels}x{mel.frames_per_segment(params.mel)} "
        f"({segments['split'].value_counts().to_dict()}) from {len(used)} pieces, "
        f"{skipped.sum()} skipped, "
        f"{used['skipped_silent'].sum()} silent segments skipped; audio hours {sources} -> {MEL}"
    )


if __name__ == "__main__":
    stage_main("mel", run)
