"""`etude doctor` on the default run: wall time with one experiment at a time and with two, side by
side, and what the doctor found.

Each timing runs in its own clone of this repository that shares the project's DVC cache, so the
default run's outputs are checked out rather than re-run and the project's own experiments, queue
and MLflow store are left alone. Needs the default run in the cache (`dvc repro` first, to the
end). The verdicts differ between the runs only within seed noise: the threads per job differ.

    python -m bench.doctor                          # every variant with a verdict
    python -m bench.doctor --variant rnn_baseline   # one variant
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine_note, print_table

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def call(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode:
        sys.exit(
            f"NOT BENCHMARKED: `{' '.join(cmd)}` failed:\n{(done.stderr or done.stdout)[-3000:]}"
        )
    return done


def clone(into: Path) -> Path:
    """A clone of HEAD with the workspace's params and metrics, on the project's DVC cache."""
    call(["git", "clone", "-q", str(ROOT), str(into)], ROOT)
    cache = call(["dvc", "cache", "dir"], ROOT).stdout.strip()
    call(["dvc", "cache", "dir", "--local", cache], into)
    for rel in ("params.yaml", "dvc.lock"):
        shutil.copy2(ROOT / rel, into / rel)
    shutil.copytree(ROOT / "metrics", into / "metrics", dirs_exist_ok=True)
    call(["dvc", "checkout", "-q"], into)
    status = call(["dvc", "status", "-q"], into)
    if status.stdout.strip():
        sys.exit("NOT BENCHMARKED: the default run is not complete in the cache: `dvc repro` first")
    return into


def doctor(jobs: int, variants: list[str], scratch: Path) -> tuple[float, dict]:
    project = clone(scratch / f"jobs{jobs}")
    args = [arg for v in variants for arg in ("--variant", v)]
    t0 = time.perf_counter()
    call(["python", "-m", "etude", "doctor", "--jobs", str(jobs), *args], project)
    seconds = time.perf_counter() - t0
    return seconds, json.loads((project / "metrics/doctor.json").read_text())


def outcomes(result: dict) -> dict[str, str]:
    return {
        f"{variant}/{name}": ("cleared" if v["cleared"] else "not cleared")
        + f" after {len(v['rounds'])} round(s)"
        for variant, entry in result["variants"].items()
        for name, v in entry["verdicts"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.doctor")
    parser.add_argument("--variant", action="append", default=[])
    args = parser.parse_args()
    print(machine_note())
    with tempfile.TemporaryDirectory(prefix="bench-doctor-") as scratch:
        one, first = doctor(1, args.variant, Path(scratch))
        two, second = doctor(2, args.variant, Path(scratch))
    experiments = sum(
        len(entry["seed_runs"])
        + len({r["experiment"] for v in entry["verdicts"].values() for r in v["rounds"]})
        for entry in first["variants"].values()
    )
    print_table(
        ["doctor", "wall s", "experiments", "s per experiment", "speed-up"],
        [
            ["-j 1", f"{one:.0f}", str(experiments), f"{one / max(experiments, 1):.0f}", "1.00x"],
            [
                "-j 2",
                f"{two:.0f}",
                str(experiments),
                f"{two / max(experiments, 1):.0f}",
                f"{one / two:.2f}x",
            ],
        ],
    )
    a, b = outcomes(first), outcomes(second)
    print_table(
        ["verdict", "-j 1", "-j 2"],
        [[k, a.get(k, "-"), b.get(k, "-")] for k in sorted(set(a) | set(b))],
    )


if __name__ == "__main__":
    main()
