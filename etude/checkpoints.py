"""`python -m etude.checkpoints [--remove]`: list checkpoint folders, remove those no run can use.

A run's folder is checkpoints/<variant>/<config hash>-<code hash>. Training resumes from a folder
only when both hashes match its configuration and the current code, so a folder is in use when it
belongs to a variant of params.yaml or of a DVC experiment (refs/exps) with today's code, or when a
`resume_from` names a checkpoint inside it. Every other folder (an older configuration, older code,
a removed variant) is stale: listed, and deleted with --remove.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from etude import tracking
from etude.models import family
from etude.params import Params, ParamsError, config_hash, load, load_text


@dataclass(frozen=True)
class Folder:
    path: Path
    variant: str
    megabytes: float
    in_use: str | None  # where its configuration comes from; None: stale


def _experiment_params(root: Path) -> dict[str, Params]:
    """params.yaml of every DVC experiment in the repository, by ref."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=root,
                          capture_output=True, text=True).stdout.split()
    found = {}
    for ref in refs:
        text = subprocess.run(["git", "show", f"{ref}:params.yaml"], cwd=root, capture_output=True, text=True)
        try:
            found[ref] = load_text(text.stdout, f"{ref}:params.yaml")
        except ParamsError:  # an experiment of older code whose params no longer load: its folders are stale
            continue
    return found


def used_folders(root: Path) -> dict[Path, str]:
    """Checkpoint folders that a current configuration would resume from, with where it comes from."""
    used: dict[Path, str] = {}
    for source, params in {"params.yaml": load(root / "params.yaml"), **_experiment_params(root)}.items():
        for name in params.variants:
            config = params.variant(name)
            folder = root / "checkpoints" / name / f"{config_hash(config)}-{family(config.model).code_hash()}"
            used.setdefault(folder, source)
            if config.resume_from:
                used.setdefault((root / config.resume_from).parent, f"{source} (resume_from)")
    return used


def survey(root: Path) -> list[Folder]:
    used = used_folders(root)
    folders = []
    for path in sorted((root / "checkpoints").glob("*/*")):
        if path.is_dir():
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            folders.append(Folder(path, path.parent.name, size / 1e6, used.get(path)))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--remove", action="store_true", help="delete the stale folders")
    args = parser.parse_args()
    root = tracking.project_root()
    folders = survey(root)
    for f in folders:
        print(f"{f.megabytes:9.1f} MB  {f.path.relative_to(root)}  "
              + (f"in use: {f.in_use}" if f.in_use else "stale" + (": removed" if args.remove else "")))
        if args.remove and not f.in_use:
            shutil.rmtree(f.path)
    stale = [f for f in folders if not f.in_use]
    verb = "removed" if args.remove else "stale (python -m etude.checkpoints --remove deletes them)"
    print(f"{len(folders)} run folders, {sum(f.megabytes for f in folders):.1f} MB; "
          f"{len(stale)} {verb}, {sum(f.megabytes for f in stale):.1f} MB")


if __name__ == "__main__":
    main()
