"""Disk left by a default `dvc repro`, and what one `dvc exp run -S lr=0.0005` adds, per folder.

Copies the project's tracked files into a fresh git repository (so that DVC experiments work),
runs the full default pipeline there (~15 min on 2 cores), measures models/, checkpoints/,
.dvc/cache/, mlruns/ and the whole workspace (without .git), commits, runs one experiment and
measures again. Sizes are st_size sums with hard-linked files counted once; MB = 1e6 bytes.
Targets: models/ < 300 MB and checkpoints/ < 1 GB after the default run, .dvc/cache/ < 100 MB
added by the experiment. Exits 0 when a target fails (a benchmark, not a test); 1 only when a
command fails and nothing can be measured.

    python -m bench.disk [--project PATH] [--keep DIR]
"""

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine_note, print_table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # not resolved: the venv's bin, not the base interpreter's
FOLDERS = ["models", "checkpoints", ".dvc/cache", "mlruns"]
TOTAL = "workspace (no .git)"
MB, GB = 1e6, 1e9
# folder -> (the column the target applies to, limit in bytes, label)
TARGETS = {
    "models": ("default", 300 * MB, "< 300 MB (default run)"),
    "checkpoints": ("default", 1 * GB, "< 1 GB (default run)"),
    ".dvc/cache": ("added", 100 * MB, "< 100 MB (added by exp)"),
}
EXPERIMENT = ["dvc", "exp", "run", "-S", "lr=0.0005"]


def env() -> dict[str, str]:
    """The parent's environment without DVC/MLflow settings (a DVC_ROOT would redirect mlruns/) nor
    PYTHONPATH (the copy's own code must be imported), the venv's tools first."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVC_", "MLFLOW_")) and k != "PYTHONPATH"
    }
    return clean | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
        cwd=project,
        env=env(),
        check=True,
        capture_output=True,
    )


def copy_project(source: Path, dest: Path) -> None:
    """The tracked files of `source`, committed in a new repository at `dest`."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=source, capture_output=True, text=True, check=True
    )
    for rel in filter(None, files.stdout.split("\0")):
        if (source / rel).is_file():  # skips files deleted in the work tree
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project copy")


def timed(project: Path, cmd: list[str]) -> float:
    """Wall seconds of `cmd`; echoes only DVC's stage lines (progress), the whole output's tail on
    failure."""
    print(f"\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Running stage"):
            print(f"  {time.perf_counter() - t0:7.0f} s  {line.strip()}", flush=True)
    if proc.wait():
        print("\n".join(lines[-60:]))
        sys.exit(f"\nNOT MEASURED: `{' '.join(cmd)}` failed (exit {proc.returncode}) in {project}")
    seconds = time.perf_counter() - t0
    print(f"  done in {seconds / 60:.1f} min", flush=True)
    return seconds


def files(project: Path) -> dict[str, tuple[tuple[int, int], int]]:
    """Every regular file outside .git: relative path -> ((st_dev, st_ino), st_size). Symlinks are
    skipped: their targets are counted where they live."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(project):
        if Path(dirpath) == project:
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                found[path.relative_to(project).as_posix()] = ((st.st_dev, st.st_ino), st.st_size)
    return found


def size(found: dict, folder: str | None = None) -> int:
    """Bytes under `folder` (None: everything), each hard-linked inode once."""
    inodes = {
        key: n for rel, (key, n) in found.items() if folder is None or rel.startswith(folder + "/")
    }
    return sum(inodes.values())


def sizes(project: Path) -> dict[str, int]:
    found = files(project)
    return {folder: size(found, folder) for folder in FOLDERS} | {TOTAL: size(found)}


def print_sizes(title: str, measured: dict[str, int]) -> None:
    print(f"\n{title}")
    print_table(["folder", "MB"], [[name, f"{n / MB:.1f}"] for name, n in measured.items()])


def print_largest(project: Path, title: str, count: int = 10) -> None:
    """The largest files under models/ and checkpoints/: what the two targets are made of."""
    found = [
        (n, rel)
        for rel, (_, n) in files(project).items()
        if rel.startswith(("models/", "checkpoints/"))
    ]
    print(f"\n{title}")
    print_table(
        ["file", "MB"], [[rel, f"{n / MB:.2f}"] for n, rel in sorted(found, reverse=True)[:count]]
    )


def verdict(folder: str, default: int, added: int) -> tuple[str, str]:
    if folder not in TARGETS:
        return "-", "-"
    column, limit, label = TARGETS[folder]
    return label, "PASS" if (default if column == "default" else added) < limit else "FAIL"


def measure(source: Path, project: Path) -> None:
    copy_project(source, project)
    repro_s = timed(project, ["dvc", "repro"])
    default = sizes(project)
    print_sizes("After the default run", default)
    print_largest(project, "Largest files under models/ and checkpoints/ after the default run")
    git(project, "add", "-A")
    git(
        project, "commit", "-qm", "default run", "--allow-empty"
    )  # dvc.lock may come out byte-identical
    exp_s = timed(project, EXPERIMENT)
    after = sizes(project)
    added = {name: after[name] - default[name] for name in after}
    print_sizes(f"Added by `{' '.join(EXPERIMENT)}`", added)
    print_largest(project, "Largest files under models/ and checkpoints/ after the experiment")
    rows = [
        [
            name + ("/" if name != TOTAL else ""),
            f"{default[name] / MB:.1f}",
            f"{added[name] / MB:+.1f}",
            *verdict(name, default[name], added[name]),
        ]
        for name in default
    ]
    print()
    print_table(
        [
            "folder",
            "after default run MB",
            f"added by `{' '.join(EXPERIMENT)}` MB",
            "target",
            "result",
        ],
        rows,
    )
    print(
        f"\nwall time: dvc repro {repro_s / 60:.1f} min, "
        f"{' '.join(EXPERIMENT)} {exp_s / 60:.1f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project", type=Path, default=ROOT, help="the project to copy (its tracked files)"
    )
    parser.add_argument("--keep", type=Path, help="copy into this new directory and keep it")
    args = parser.parse_args()
    source = args.project.resolve()
    print(machine_note())
    print(f"project: {source}")
    if args.keep:
        if args.keep.exists() and any(args.keep.iterdir()):
            sys.exit(f"--keep {args.keep}: not empty")
        args.keep.mkdir(parents=True, exist_ok=True)
        print(f"copy kept in {args.keep.resolve()}")
        measure(source, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="etude-bench-disk-") as tmp:
            measure(source, Path(tmp))


if __name__ == "__main__":
    main()
