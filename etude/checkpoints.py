"""Training checkpoints: one folder per run, and `python -m etude.checkpoints [--remove]`, which
lists the folders and removes those no run can use.

A run's folder is checkpoints/<variant>/<config hash>-<code hash>, outside the stage outputs that
DVC and Snakemake delete before a run. Training resumes from a folder only when both hashes match
its configuration and the current code, so a folder is in use when it belongs to a variant of
params.yaml or of a DVC experiment (refs/exps) with today's code, or when a `resume_from` names a
checkpoint inside it. Every other folder (an older configuration, older code, a removed variant) is
stale: listed, and deleted with --remove.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from etude import tracking
from etude.family import Family
from etude.models import family_named
from etude.params import Params, ParamsError
from etude.variants import config_hash, load, load_text, variant_config

FOLDER = "checkpoints"


def run_folder(root: Path, variant: str, config, family: Family) -> Path:
    """Where a run of `variant` with this configuration and the current code keeps its
    checkpoints."""
    return root / FOLDER / variant / f"{config_hash(config)}-{family.code_hash()}"


class RunCheckpoints:
    """One run's checkpoint folder: last.pt, best.pt and periodic epoch_NNNN.pt. Files with equal
    contents are hard links of one another (best after an improving epoch, a periodic checkpoint of
    the last epoch), so a run costs disk only for the states that differ."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def save(
        self,
        model,
        optimizer,
        scheduler,
        progress: dict[str, Any],
        epoch: int,
        improved: bool,
        periodic: bool,
    ) -> None:
        """Everything a resumed run needs after `epoch` epochs (`progress`: the loop's own
        state)."""
        tmp = self.folder / "last.tmp"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
                "progress": progress,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            tmp,
        )
        # last.pt is replaced last: a kill before that leaves the previous epoch's state, and the
        # resumed run redoes this epoch and its best and periodic links.
        if improved:
            _link(tmp, self.best)
        if periodic and self.keep:
            _link(tmp, self.folder / f"epoch_{epoch:04d}.pt")
            for old in sorted(self.folder.glob("epoch_*.pt"))[: -self.keep]:
                old.unlink()
        os.replace(tmp, self.last)  # atomic: a kill mid-write leaves the previous checkpoint intact


def _link(source: Path, target: Path) -> None:
    """`target` becomes a hard link of `source` (a copy where the file system has none),
    atomically."""
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


@dataclass(frozen=True)
class Folder:
    path: Path
    variant: str
    megabytes: float
    in_use: str | None  # where its configuration comes from; None: stale


def _experiment_params(root: Path) -> dict[str, Params]:
    """params.yaml of every DVC experiment in the repository, by ref."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.split()
    found = {}
    for ref in refs:
        text = subprocess.run(
            ["git", "show", f"{ref}:params.yaml"], cwd=root, capture_output=True, text=True
        )
        try:
            found[ref] = load_text(text.stdout, f"{ref}:params.yaml")
        except (
            ParamsError
        ):  # an experiment of older code whose params no longer load: its folders are stale
            continue
    return found


def used_folders(root: Path) -> dict[Path, str]:
    """Checkpoint folders that a current configuration would resume from, with where it comes
    from."""
    used: dict[Path, str] = {}
    for source, params in {
        "params.yaml": load(root / "params.yaml"),
        **_experiment_params(root),
    }.items():
        for name in params.variants:
            config = variant_config(params, name)
            folder = run_folder(root, name, config, family_named(config.model))
            used.setdefault(folder, source)
            if config.resume_from:
                used.setdefault((root / config.resume_from).parent, f"{source} (resume_from)")
    return used


def survey(root: Path) -> list[Folder]:
    used = used_folders(root)
    folders = []
    for path in sorted((root / FOLDER).glob("*/*")):
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
        print(
            f"{f.megabytes:9.1f} MB  {f.path.relative_to(root)}  "
            + (
                f"in use: {f.in_use}"
                if f.in_use
                else "stale" + (": removed" if args.remove else "")
            )
        )
        if args.remove and not f.in_use:
            shutil.rmtree(f.path)
    stale = [f for f in folders if not f.in_use]
    verb = "removed" if args.remove else "stale (python -m etude.checkpoints --remove deletes them)"
    print(
        f"{len(folders)} run folders, {sum(f.megabytes for f in folders):.1f} MB; "
        f"{len(stale)} {verb}, {sum(f.megabytes for f in stale):.1f} MB"
    )


if __name__ == "__main__":
    main()
