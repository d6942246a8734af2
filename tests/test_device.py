"""Cores shared among etude's computing processes, and stages that end with their parent."""

import subprocess
import sys
import time

import torch

from etude import device
from etude.device import COMPUTING, DEFAULT_THREADS, computing_peers, share_cores


def test_threads_zero_keeps_every_core_outside_a_queue():
    assert not device.queued() and share_cores(0) == DEFAULT_THREADS


def test_threads_zero_in_a_queued_experiment_shares_the_cores(monkeypatch, tmp_path):
    queue_copy = tmp_path / ".dvc/tmp/exps/tmp1234"
    queue_copy.mkdir(parents=True)
    monkeypatch.chdir(queue_copy)
    monkeypatch.delenv(device.JOBS_ENV, raising=False)
    before = torch.get_num_threads()
    alone = share_cores(0)
    peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (COMPUTING / str(peer.pid)).touch()
        assert computing_peers() >= 2
        assert share_cores(0) == max(1, DEFAULT_THREADS // computing_peers())
        assert torch.get_num_threads() == share_cores(0)
        assert share_cores(3) == 3  # a count in params.yaml is kept as it is
    finally:
        peer.kill()
        peer.wait()
    # An ended process's file is removed on the next count: the cores come back.
    assert share_cores(0) == alone and not (COMPUTING / str(peer.pid)).exists()
    # Started by the doctor: its job count, fixed for the whole run.
    monkeypatch.setenv(device.JOBS_ENV, "2")
    assert share_cores(0) == max(1, DEFAULT_THREADS // 2)
    torch.set_num_threads(before)


def test_a_stage_ends_when_the_process_that_started_it_is_killed(tmp_path):
    """The parent (a shell, as dvc's `sh -c`) starts a child that watches it, then is killed with
    SIGKILL: the child ends within seconds instead of running on as an orphan."""
    child = (
        "from etude.device import stop_with_parent; import time, os; stop_with_parent(); "
        f"open('{tmp_path}/pid', 'w').write(str(os.getpid())); time.sleep(60)"
    )
    parent = subprocess.Popen(["sh", "-c", f'{sys.executable} -c "{child}"; true'])
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
