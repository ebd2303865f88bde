"""lobolib.experiment.lock: one process at a time per run folder, across real processes; a dead
holder's lock is taken over; the lock of a data-parallel launch is its main process's."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lobolib.errors import LoboError
from lobolib.experiment import lock as run_lock
from lobolib.experiment.distributed import Shard
from lobolib.experiment.lock import LOCK_FILE, RunLock, launch_lock, read_holder

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from lobolib.experiment.lock import RunLock
with RunLock(sys.argv[1], wait=float(sys.argv[2])):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
print("released", flush=True)
"""


def holder(run_dir: Path, *, wait: float = 0.0, hold: float = 60.0) -> subprocess.Popen:
    """A real process that takes the lock of `run_dir` and keeps it `hold` seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(wait), str(hold)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_line(process: subprocess.Popen, line: str) -> None:
    got = process.stdout.readline().strip()
    assert got == line, process.stderr.read()


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    first = holder(tmp_path / "run")
    try:
        wait_for_line(first, "held")
        second = holder(tmp_path / "run")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1 and "LoboError" in err
        message = err.strip().splitlines()[-1]
        assert f"is in use by another run (pid {first.pid} on {socket.gethostname()}" in message
        assert "--wait" in message
        with pytest.raises(LoboError, match=f"pid {first.pid}"):
            RunLock(tmp_path / "run").acquire()  # and in this process too
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    first = holder(tmp_path / "run")
    wait_for_line(first, "held")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert read_holder(tmp_path / "run" / LOCK_FILE)["pid"] == first.pid  # its note is still there
    with RunLock(tmp_path / "run") as taken:
        assert taken.held and read_holder(tmp_path / "run" / LOCK_FILE)["pid"] == os.getpid()
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # released


def test_wait_queues_behind_the_holder(tmp_path):
    first = holder(tmp_path / "run", hold=1.5)
    wait_for_line(first, "held")
    started = time.monotonic()
    with RunLock(tmp_path / "run", wait=30):
        waited = time.monotonic() - started
        first.wait(timeout=30)
    assert 0.5 < waited < 30
    with pytest.raises(LoboError, match="in use"), RunLock(tmp_path / "other", wait=0) as mine:
        RunLock(tmp_path / "other", wait=0.6).acquire()  # times out
    assert not mine.held


def test_the_lock_file_respects_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        with RunLock(tmp_path / "run"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "run" / LOCK_FILE).stat().st_mode & 0o777 == 0o664


# --- without flock ---------------------------------------------------------------------------------


@pytest.fixture
def no_flock(monkeypatch):
    import fcntl

    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def test_without_flock_the_lock_file_is_created_exclusively(tmp_path, no_flock):
    with RunLock(tmp_path / "run") as mine:
        assert mine.held
        with pytest.raises(LoboError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # the fallback's file is removed on release


def test_without_flock_a_dead_process_on_this_host_is_taken_over_and_another_host_is_not(tmp_path, no_flock):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / LOCK_FILE
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with RunLock(tmp_path / "run"):
        assert read_holder(path)["pid"] == os.getpid()
    path.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "started": "x"}))
    with pytest.raises(LoboError, match=f"pid {dead.pid} on another-host"):
        RunLock(tmp_path / "run").acquire()


# --- a data-parallel launch ------------------------------------------------------------------------


def test_only_the_main_process_of_a_launch_takes_the_lock_and_all_learn_its_answer(tmp_path, monkeypatch):
    answers = {}  # what the main process sent (the others receive it)
    monkeypatch.setattr("lobolib.experiment.distributed.gather_object",
                        lambda values, shard: values if shard.is_main else answers["main"])
    with RunLock(tmp_path / "run"):  # another run holds the folder
        with pytest.raises(LoboError) as refused:
            with launch_lock(tmp_path / "run", shard=Shard(0, 2)):
                pass
        answers["main"] = [str(refused.value)]
        with pytest.raises(LoboError, match="in use by another run"):
            with launch_lock(tmp_path / "run", shard=Shard(1, 2)):
                pass
    answers["main"] = [None]
    with launch_lock(tmp_path / "run", shard=Shard(1, 2)) as lock:
        assert not lock.held  # a non-main process never touches the lock
        with launch_lock(tmp_path / "run", shard=Shard(0, 2)) as main_lock:
            assert main_lock.held


def test_an_unwritable_run_folder_is_one_error(tmp_path, monkeypatch):
    real = os.open

    def read_only(path, flags, mode=0o777, **kwargs):
        if str(path).endswith(LOCK_FILE):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, flags, mode, **kwargs)

    monkeypatch.setattr(run_lock.os, "open", read_only)
    with pytest.raises(LoboError, match="cannot write .*\\.lock: the file system is read-only"):
        RunLock(tmp_path / "run").acquire()
