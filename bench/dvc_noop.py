"""No-op `dvc repro`: seconds to find that nothing changed, with `dvc status` beside it.

Refuses to run (exit 1) unless `dvc status` reports the pipeline up to date, so that it never
starts a long pipeline. Then one untimed `dvc repro` warm-up and the median of 3 timed runs each.
Target: no-op `dvc repro` < 3 s.

    python -m bench.dvc_noop
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import machine_note, print_table

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
UP_TO_DATE = "Data and pipelines are up to date."
TARGET_S = 3.0


def dvc(*args: str) -> float:
    """Seconds one `dvc <args>` takes; stops the benchmark if it fails or finds work to do."""
    t0 = time.perf_counter()
    done = subprocess.run(["dvc", *args], cwd=ROOT, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode or UP_TO_DATE not in done.stdout:
        lines = (done.stdout + done.stderr).splitlines()
        print(
            "\n".join(
                lines[:15] + ([f"... ({len(lines) - 15} more lines)"] if len(lines) > 15 else [])
            )
        )
        sys.exit(
            f"\nNOT BENCHMARKED: `dvc {' '.join(args)}` (exit {done.returncode}) "
            f"does not report the pipeline "
            f"up to date.\nRun `dvc repro` to completion first, then this benchmark."
        )
    return seconds


def main() -> None:
    print(machine_note())
    dvc("status")  # exits here, before any repro, if anything changed
    dvc("repro")  # warm-up
    rows = []
    for args, target in ((("repro",), f"< {TARGET_S:g}"), (("status",), "-")):
        times = [dvc(*args) for _ in range(3)]
        median = statistics.median(times)
        rows.append(
            [
                f"dvc {' '.join(args)}",
                f"{median:.2f}",
                f"{min(times):.2f}",
                f"{max(times):.2f}",
                target,
                f"{TARGET_S / median:.2f}x" if target != "-" else "-",
            ]
        )
    print()
    print_table(
        ["command (no-op)", "median s", "min s", "max s", "target s", "target / median"], rows
    )


if __name__ == "__main__":
    main()
