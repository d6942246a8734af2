"""Where a variant computes, the seeds and threads that make its numbers repeat, and the cores it
shares with the other etude processes computing on this machine."""

from __future__ import annotations

import atexit
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

# Every computing etude process (a training, an evaluation) leaves its pid here while it runs.
COMPUTING = Path(tempfile.gettempdir()) / f"etude-{os.getuid()}" / "computing"
# Set by `etude doctor` for its queue workers: how many experiments run at once.
JOBS_ENV = "ETUDE_JOBS"
# How often a stage looks whether the process that started it is still there.
WATCH_SECONDS = 1.0
SHELLS = {"sh", "bash", "dash", "zsh"}
# torch's own choice (one per physical core), what `threads: 0` means outside a queue.
DEFAULT_THREADS = torch.get_num_threads()


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int, threads: int) -> int:
    """Seeds every generator and sets the threads (`share_cores`); returns the thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        # CPU kernels are deterministic already (and the global flag costs ~35 us per sampling
        # step); warn_only: cuDNN's LSTM backward has no deterministic variant.
        torch.use_deterministic_algorithms(True, warn_only=True)
    return share_cores(threads)


def cores() -> int:
    """The cores this process may run on (a SLURM or container limit included)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that pid: alive
        return True
    return True


def queued() -> bool:
    """This stage runs in a queued DVC experiment: a copy of the repository under .dvc/tmp/exps."""
    return "/.dvc/tmp/exps/" in f"{Path.cwd().as_posix()}/"


def computing_peers() -> int:
    """How many queued etude stages compute on this machine now, this one included (files of
    ended ones are removed on the way)."""
    COMPUTING.mkdir(parents=True, exist_ok=True)
    mine = COMPUTING / str(os.getpid())
    if not mine.exists():
        mine.touch()
        atexit.register(mine.unlink, missing_ok=True)
    live = 0
    for entry in COMPUTING.iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            live += 1
        else:
            entry.unlink(missing_ok=True)
    return max(live, 1)


def share_cores(threads: int) -> int:
    """Sets torch's intra-op threads and returns the count: `threads`; with 0, torch's default (one
    per physical core), except
    in a queued DVC experiment, which shares them with the others running. There the count is
    cores / ETUDE_JOBS where the doctor started the queue (fixed for the run), or else cores / the
    queued etude stages computing now, counted again at each epoch, so a run that started alone
    gives cores back when another starts (`dvc queue start -j 2`). Oversubscribed, torch's OpenMP
    threads wait on each other at every op. Float results depend on the count, so a run repeats
    bit for bit at the same count: `dvc repro` and Snakemake stages keep every core."""
    if threads:
        count = threads
    elif not queued():
        count = DEFAULT_THREADS
    elif os.environ.get(JOBS_ENV, "").isdigit() and int(os.environ[JOBS_ENV]) > 0:
        count = max(1, DEFAULT_THREADS // int(os.environ[JOBS_ENV]))
    else:
        count = max(1, DEFAULT_THREADS // computing_peers())
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return count


def _ancestors() -> list[tuple[int, str]]:
    """(pid, command name) of the parent, and of its parents while they are shells: the process
    that started this stage (dvc, snakemake), with the `sh -c` between."""
    chain, pid = [], os.getppid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        chain.append((pid, name))
        if name not in SHELLS:
            break
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return chain or [(os.getppid(), "")]


def stop_with_parent() -> None:
    """Ends this process (SIGTERM) when the process that started it ends. `dvc queue stop --kill`
    kills an experiment's dvc process but not the stage it runs: the training went on as an
    orphan, competing with the next experiments. Its last checkpoint lets a rerun resume."""
    parent, watched = os.getppid(), _ancestors()

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if os.getppid() != parent or not all(_alive(pid) for pid, _ in watched):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
