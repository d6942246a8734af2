"""The whole DAG on a real MAESTRO directory, stage by stage: wall time and peak memory, projected.

Copies the project's tracked files into a fresh repository, points `data` at a MAESTRO directory
(default ../shared/maestro-bench: 240 files, ~39 h) and runs every stage of `dvc.yaml` in order,
one `dvc repro --single-item` each, so each stage's wall time and the peak resident memory of its
largest process are its own. Then projects:
- to full MAESTRO v3 (1,276 files, ~199 h): stages that read the data scale with its hours: the
  data stages, the training of a variant that runs over every window each epoch
  (`samples_per_epoch: null`: the grid VAEs) and evaluation over every test window
  (`evaluate.max_windows: null`); training with a fixed budget of windows per epoch does not;
- to a SLURM cluster of N nodes: the data stages run one after another, then each variant's
  train -> evaluate -> generate chain on its own node; the wall time is the critical path.

`--epochs N` caps every variant's epochs at N for the measurement and scales its train stage's
time back up to the configured epochs: the same variant's configure stage (the same start-up,
imports and data loading) is taken as fixed, the rest as linear in epochs. Early stopping is
ignored, so this is an upper bound. Without a cap, the grid VAEs' full-data epochs take hours on
maestro-bench.

    python -m bench.scale [--root ../shared/maestro-bench] [--keep DIR] [--nodes 1 2 5] [--epochs N]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from ruamel.yaml import YAML

from bench import machine_note, print_table
from bench.disk import copy_project, env, git
from etude import variants
from etude.sources import maestro_metadata
from etude.variants import variant_config

ROOT = Path(__file__).resolve().parent.parent
FULL_MAESTRO_HOURS = 198.7  # MAESTRO v3.0.0: 1,276 performances
DATA_STAGES = ("fetch", "ingest", "tokenize", "grids", "mel")
# A stage's largest process, measured from a wrapper that only waits for `dvc repro`.
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "file=sys.stderr); "
    "sys.exit(code)"
)


def stages(project: Path) -> list[str]:
    """Every stage, in the file's order (dvc.yaml is written in dependency order)."""
    listed = subprocess.run(
        ["dvc", "stage", "list", "--name-only"],
        cwd=project,
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return listed.stdout.split()


def run_stage(project: Path, stage: str) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one stage."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, "dvc", "repro", "--single-item", stage],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:])
        sys.exit(f"NOT MEASURED: stage {stage} failed (exit {done.returncode}) in {project}")
    peak_kb = int(done.stderr.rsplit("peak_rss_kb", 1)[1].split()[0])
    print(f"  {stage:<24} {seconds:8.1f} s  {peak_kb / 1024:8.0f} MB", flush=True)
    return seconds, peak_kb / 1024


def point_at(project: Path, root: Path, max_epochs: int | None) -> dict[str, float]:
    """Sets data to the MAESTRO directory (and caps epochs); returns each train stage's factor from
    the measured to the configured epochs."""
    configured = variants.load(project / "params.yaml")
    yaml = YAML()
    path = project / "params.yaml"
    params = yaml.load(path.read_text())
    params["data"]["source"], params["data"]["path"] = "maestro", str(root)
    factors = {}
    for variant in configured.variants:
        epochs = variant_config(configured, variant).epochs
        if max_epochs and epochs > max_epochs:
            params["variants"][variant]["epochs"] = max_epochs
            factors[f"train@{variant}"] = epochs / max_epochs
    with path.open("w") as f:
        yaml.dump(params, f)
    git(project, "commit", "-qam", f"data: maestro at {root}")
    return factors


def scales_with_data(params, stage: str) -> bool:
    """Whether a stage's work grows with the corpus (see the module's docstring)."""
    name, _, variant = stage.partition("@")
    if name == "train":
        return variant_config(params, variant).samples_per_epoch is None
    if name == "evaluate":
        return params.evaluate.max_windows is None
    return stage in DATA_STAGES


def critical_path(times: dict[str, float], nodes: int) -> float:
    """Data stages in sequence, then the variants' chains spread over `nodes` (longest first), then
    the report."""
    data = sum(t for s, t in times.items() if s in DATA_STAGES)
    chains: dict[str, float] = {}
    for stage, t in times.items():
        if "@" in stage:
            variant = stage.split("@", 1)[1]
            chains[variant] = chains.get(variant, 0.0) + t
    loads = [0.0] * nodes
    for chain in sorted(chains.values(), reverse=True):
        loads[loads.index(min(loads))] += chain
    return data + max(loads) + times.get("report", 0.0)


def measure(root: Path, project: Path, nodes: list[int], max_epochs: int | None) -> None:
    meta = maestro_metadata(root)
    hours = float(meta["duration"].sum()) / 3600
    print(f"data: {root} ({len(meta)} files, {hours:.1f} h)")
    copy_project(ROOT, project)
    params = variants.load(project / "params.yaml")
    epoch_factors = point_at(project, root, max_epochs)
    print(f"\nstages in {project}" + (f" (epochs capped at {max_epochs}):" if max_epochs else ":"))
    measured = {stage: run_stage(project, stage) for stage in stages(project)}
    # Wall time at the configured epochs, on maestro-bench and on full MAESTRO.
    times = {stage: seconds for stage, (seconds, _) in measured.items()}
    for stage, factor in epoch_factors.items():
        start_up = min(times[stage.replace("train@", "configure@")], times[stage])
        times[stage] = start_up + (times[stage] - start_up) * factor
    scale = FULL_MAESTRO_HOURS / hours
    full_times = {s: t * scale if scales_with_data(params, s) else t for s, t in times.items()}
    rows = []
    for stage, (seconds, peak) in measured.items():
        factor = epoch_factors.get(stage)
        wall = f"{times[stage]:.0f}" + (f" (x{factor:.1f})" if factor else "")
        rows.append(
            [
                stage,
                f"{seconds:.0f}",
                f"{peak:.0f}",
                wall,
                f"{full_times[stage]:.0f}",
                "x hours" if scales_with_data(params, stage) else "fixed budget",
            ]
        )
    print()
    print_table(
        [
            "stage",
            "measured s",
            "peak MB",
            f"wall s ({hours:.0f} h)",
            f"wall s, full MAESTRO ({FULL_MAESTRO_HOURS:.0f} h)",
            "scales",
        ],
        rows,
    )
    print()
    print_table(
        ["nodes", f"wall min ({hours:.0f} h)", "full MAESTRO wall min", "speed-up vs 1 node"],
        [
            [
                n,
                f"{critical_path(times, n) / 60:.1f}",
                f"{critical_path(full_times, n) / 60:.1f}",
                f"{critical_path(full_times, 1) / critical_path(full_times, n):.2f}x",
            ]
            for n in nodes
        ],
    )
    data_s = sum(t for s, t in full_times.items() if s in DATA_STAGES)
    print(
        f"\nfull MAESTRO: data stages {data_s / 60:.1f} min of "
        f"{sum(full_times.values()) / 60:.1f} min on one "
        f"node; they run one after another whatever N, so they bound the cluster's speed-up"
    )
    print(
        pd.Series({s: p for s, (_, p) in measured.items()}).idxmax(), "has the largest peak memory"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "maestro-bench")
    parser.add_argument("--keep", type=Path, help="run in this new directory and keep it")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument(
        "--epochs", type=int, help="cap every variant's epochs; train times are scaled back up"
    )
    args = parser.parse_args()
    print(machine_note())
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        measure(args.root.resolve(), args.keep.resolve(), args.nodes, args.epochs)
    else:
        with tempfile.TemporaryDirectory(prefix="etude-bench-scale-") as tmp:
            measure(args.root.resolve(), Path(tmp), args.nodes, args.epochs)


if __name__ == "__main__":
    main()
