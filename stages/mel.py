"""mel: log-mel segments of every piece's audio (recording, else the MIDI rendered), in shards."""

from pathlib import Path

import pandas as pd

from etude import mel
from etude.cli import stage_main
from etude.pipeline import MEL, PIECES, RAW


def run(params, _variant):
    raw = pd.read_parquet(RAW, columns=["path", "data"])
    segments, pieces = mel.build(raw, pd.read_parquet(PIECES), params.audio, params.mel, Path(MEL))
    sources = pieces.groupby("audio")["seconds"].sum().div(3600).round(3).to_dict()
    print(f"mel: {len(segments)} segments {params.mel.n_mels}x{mel.frames_per_segment(params.mel)} "
          f"({segments['split'].value_counts().to_dict()}), {pieces['skipped_silent'].sum()} silent skipped; "
          f"audio hours {sources} -> {MEL}")


if __name__ == "__main__":
    stage_main("mel", run)
