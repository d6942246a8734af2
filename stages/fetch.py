"""fetch: collect the source's MIDI files and metadata into data/raw/midi.parquet."""

from pathlib import Path

from etude import sources
from etude.cli import stage_main
from etude.errors import StageError
from etude.pipeline import RAW


def run(params, _variant):
    try:
        raw = sources.collect(params.data)
    except sources.SourceError as err:
        raise StageError(str(err)) from None
    Path(RAW).parent.mkdir(parents=True, exist_ok=True)
    raw.to_parquet(RAW, index=False)
    counts = raw["split"].value_counts().to_dict()
    print(f"fetch: {len(raw)} files from {params.data.source} {counts} -> {RAW}")


if __name__ == "__main__":
    stage_main("fetch", run)
