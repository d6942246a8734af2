"""Ingest throughput on real MAESTRO files: etude.ingest.ingest against a serial pretty_midi loop.

Measures files/s and notes/s of etude's ingest (symusic parser in a thread pool, workers=2 and 1;
file reading timed separately) and of a plain `pretty_midi.PrettyMIDI` loop over the same bytes,
the speed-up between them, and the time full MAESTRO v3 (1,276 files) would take at that rate.
Target: full MAESTRO in < 30 s on 2 cores.

    python -m bench.ingest [--root ../shared/maestro-bench]
"""

import argparse
import io
import time
from pathlib import Path

import pandas as pd
import pretty_midi

from bench import machine_note, median_time, print_table
from etude.ingest import OK, ingest
from etude.params import Ingest

MAESTRO_FILES = 1276
TARGET_S = 30.0


def read_raw(root: Path) -> pd.DataFrame:
    """The raw table the fetch stage would write: metadata left empty, the file bytes in `data`."""
    paths = sorted(root.glob("**/*.midi"))
    if not paths:
        raise SystemExit(f"no .midi files under {root}")
    meta = dict.fromkeys(
        ["composer", "title", "year", "duration", "audio_path", "time_signature", "sha256"]
    )
    return pd.DataFrame(
        {
            "path": [str(p.relative_to(root)) for p in paths],
            "split": "train",
            **meta,
            "bpm": float("nan"),
            "data": [p.read_bytes() for p in paths],
        }
    )


def pretty_midi_notes(raw: pd.DataFrame) -> int:
    return sum(
        len(inst.notes)
        for data in raw["data"]
        for inst in pretty_midi.PrettyMIDI(io.BytesIO(data)).instruments
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/maestro-bench"))
    args = parser.parse_args()

    print(machine_note())
    t0 = time.perf_counter()
    raw = read_raw(args.root)
    read_s = time.perf_counter() - t0
    files, mb = len(raw), raw["data"].map(len).sum() / 1e6
    print(
        f"{files} files, {mb:.1f} MB from {args.root}: read in {read_s:.2f} s (not counted below)\n"
    )

    results = {}  # name -> (seconds, notes)
    for workers in (2, 1):
        settings = Ingest(workers=workers, min_notes=1, max_duration_s=14400, include_drums=False)
        notes, pieces = ingest(raw, settings, progress=False)  # warm-up, and the note count
        assert (pieces["status"] == OK).all(), pieces.loc[pieces["status"] != OK, ["path", "error"]]
        seconds = median_time(
            lambda s=settings: ingest(raw, s, progress=False), repeats=3, warmup=0
        )
        results[f"etude ingest, workers={workers}"] = (seconds, len(notes))

    pretty_midi.PrettyMIDI(io.BytesIO(raw["data"][0]))  # warm-up: imports, caches
    t0 = time.perf_counter()
    pm_notes = pretty_midi_notes(raw)  # one run: it is slow
    results["pretty_midi loop, serial"] = (time.perf_counter() - t0, pm_notes)

    pm_s = results["pretty_midi loop, serial"][0]
    rows = []
    for name, (seconds, notes) in results.items():
        full = MAESTRO_FILES / (files / seconds)
        rows.append(
            [
                name,
                f"{seconds:.2f}",
                f"{files / seconds:,.0f}",
                f"{notes / seconds:,.0f}",
                f"{notes:,}",
                f"{pm_s / seconds:.1f}x",
                f"{full:.1f}",
                f"{TARGET_S / full:.2f}x",
            ]
        )
    print_table(
        [
            "method",
            "seconds",
            "files/s",
            "notes/s",
            "notes",
            "vs pretty_midi",
            f"full MAESTRO s (target < {TARGET_S:g})",
            "margin",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
