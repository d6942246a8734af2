"""The mel stage and spectral-VAE training at scale: MAESTRO MIDI rendered to audio, with memory.

Runs the real library code on a MAESTRO directory (default ../shared/maestro-bench, 240 files,
~39 h): fetch -> ingest -> mel (render with the pinned SoundFont, log-mel, shards), then trains the
`spectral_vae` variant for a few steps on the memory-mapped shards. Prints wall time, audio
seconds per second, peak resident memory of the main process and of the largest worker beside the
size of the data, and extrapolates to full MAESTRO (~200 h).

    python -m bench.mel [--root ../shared/maestro-bench] [--work /tmp/etude-bench-mel]
                        [--train-samples 512]
"""

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

import pandas as pd

from bench import machine_note, print_table
from etude import mel, sources
from etude.ingest import ingest
from etude.models import family_named
from etude.pipeline import MEL
from etude.training import TrainPaths, train
from etude.variants import load, variant_config

FULL_MAESTRO_HOURS = 200.0


def peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def reset_peak() -> None:
    """Start this process's peak-RSS (VmHWM) afresh, so each phase reports its own peak (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith(field))) / 1024


def current_mb() -> float:
    return _status_mb("VmRSS")


def own_peak_mb() -> float:
    return _status_mb("VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/maestro-bench"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/etude-bench-mel"))
    parser.add_argument(
        "--train-samples", type=int, default=512, help="training segments in the timed epoch"
    )
    args = parser.parse_args()
    params = load()
    root = args.root.resolve()
    print(machine_note())

    data = params.data.model_copy(update={"source": "maestro", "path": str(root)})
    raw = sources.collect(data)
    _, pieces = ingest(raw, params.ingest, progress=False)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    os.chdir(
        args.work
    )  # the variant reads data/mel and writes models/ relative to the project root
    before = current_mb()
    reset_peak()
    t0 = time.perf_counter()
    segments, table = mel.build(
        raw[["path", "data"]], pieces, params.audio, params.mel, Path(MEL), progress=False
    )
    mel_s = time.perf_counter() - t0
    mel_self, mel_workers = own_peak_mb(), peak_mb(resource.RUSAGE_CHILDREN)
    hours = table["seconds"].sum() / 3600
    shard_gb = sum(p.stat().st_size for p in Path(MEL).glob("shard_*.npy")) / 1e9
    print(
        f"{len(table)} pieces, {hours:.2f} h of audio ({table['audio'].unique().tolist()}); "
        f"{len(segments):,} segments ({segments['split'].value_counts().to_dict()}), "
        f"{table['skipped_silent'].sum()} silent skipped; {shard_gb:.2f} GB in "
        f"{len(list(Path(MEL).glob('shard_*.npy')))} shards\n"
    )

    config = variant_config(params, "spectral_vae").model_copy(
        update={"epochs": 1, "samples_per_epoch": args.train_samples, "checkpoint_every": 1}
    )
    del raw, segments  # the training phase's memory is its own
    train_before = current_mb()
    reset_peak()
    t0 = time.perf_counter()
    paths = TrainPaths(
        data=Path(MEL),
        model_dir=Path("models/spectral_vae"),
        history=Path("metrics/history.csv"),
        summary=Path("metrics/train.json"),
        run_link=Path("runs/train.json"),
        root=Path.cwd().resolve(),
    )
    state = train(
        "spectral_vae",
        config,
        family_named("spectral_vae"),
        "bench",
        paths,
        params.diagnosis,
        params.generate,
        progress_bar=False,
    )
    train_s = time.perf_counter() - t0
    train_self = own_peak_mb()
    row = state.history[-1]

    full_s = mel_s * FULL_MAESTRO_HOURS / hours
    print_table(
        ["measure", "value", "vs data"],
        [
            ["mel stage, wall s", f"{mel_s:.1f}", f"{hours * 3600 / mel_s:.0f}x realtime"],
            [
                "mel: peak RSS main process, MB",
                f"{mel_self:.0f} (before: {before:.0f})",
                f"{mel_self / (shard_gb * 1e3):.2f}x the shards",
            ],
            [
                "mel: peak RSS largest worker, MB",
                f"{mel_workers:.0f}",
                f"{mel_workers / (shard_gb * 1e3):.2f}x the shards",
            ],
            ["shards on disk, MB", f"{shard_gb * 1e3:.0f}", "1.00x"],
            [
                f"full MAESTRO ({FULL_MAESTRO_HOURS:.0f} h) mel stage, extrapolated min",
                f"{full_s / 60:.0f}",
                f"{FULL_MAESTRO_HOURS * 3600 * 128 * 259 * 2 / 3 / 1e9:.1f} GB of shards",
            ],
            [
                f"train 1 epoch of {args.train_samples} segments + validation, wall s",
                f"{train_s:.1f}",
                f"{args.train_samples / train_s:.1f} segments/s",
            ],
            [
                "train: peak RSS main process, MB",
                f"{train_self:.0f} (before: {train_before:.0f})",
                f"{train_self / (shard_gb * 1e3):.2f}x the shards",
            ],
            [
                "train: validation MSE (normalised) after the epoch",
                f"{row['val_mse']:.3f}",
                "1.0 = per-bin mean",
            ],
        ],
    )
    pd.DataFrame(state.history).to_csv("metrics/history.csv", index=False)


if __name__ == "__main__":
    main()
