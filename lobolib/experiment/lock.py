"""One process at a time per run folder: the run lock, ``<run>/.lock``.

`RunLock(run_dir)` holds an exclusive ``flock`` on ``<run>/.lock`` while a run, rescore or sweep
works in the folder, and writes into the file who holds it (pid, host, start time, command). A
second run on the same folder is refused at once with one LoboError naming the holder, or, with
``wait=`` seconds, waits that long for the lock to be released. The operating system releases a
flock when its process ends, however it ends (crash, ``kill -9``), so the lock of a dead process
is simply taken over; on NFS, Linux maps flock to the server's byte-range locks, so hosts that
share the output folder exclude each other too.

On a file system without flock (ENOLCK, EOPNOTSUPP) the lock falls back to creating the file
with O_EXCL; a lock file left by a process that is gone is then taken over when that process ran
on this host, and named in the refusal when it ran on another (delete the file once that run is
known to be over).

Data parallel (`accelerate launch`): the processes of one launch are one run. Only the main
process takes the lock (`launch_lock`); the others learn from it whether the run may go on and,
if not, raise the same error, so no process of a refused launch starts work.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from lobolib.errors import LoboError
from lobolib.experiment.files import WRITE_ERRNOS, cannot_write, make_dirs

LOCK_FILE = ".lock"
POLL_SECONDS = 0.5
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def holder_info() -> dict:
    """Who takes a lock: this process's pid, host, start time and command line."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["lobotomy", *sys.argv[1:]])[:300]}  # fmt: skip


def read_holder(path: Path) -> dict | None:
    """The holder written in a lock file, or None when it is empty or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or a pid we cannot judge: assume it runs
    return True


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            f"{': ' + holder['command'] if holder.get('command') else ''}")


class RunLock:
    """The lock of one run folder (a context manager); see the module docstring."""

    def __init__(self, run_dir: str | os.PathLike, *, wait: float = 0.0):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.wait = float(wait)
        self._fd: int | None = None
        self._exclusive = False  # holding the O_EXCL fallback (the file is ours to delete)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, waiting up to `wait` seconds; LoboError naming the holder otherwise."""
        make_dirs(self.run_dir)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                holder = self._try()
            except OSError as err:
                if err.errno in WRITE_ERRNOS:
                    raise cannot_write(self.path, err) from None
                raise
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise LoboError(f"{self.run_dir} is in use by another run ({_describe(holder)}); let it finish, "
                                "rerun with --wait to queue behind it, or choose another folder "
                                "(--set run=NAME or --out DIR)")  # fmt: skip
            time.sleep(POLL_SECONDS)

    def _try(self) -> dict | None:
        """Take the lock now if free (None), else return who holds it."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return read_holder(self.path) or {}
        except OSError as err:
            os.close(fd)
            if err.errno in _NO_FLOCK:
                return self._try_exclusive()
            raise
        self._fd = fd
        self._write_holder(fd)
        return None

    def _try_exclusive(self) -> dict | None:
        """The fallback without flock: the lock file exists only while held."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = read_holder(self.path)
            if not self._stale(holder):
                return holder or {}
            with contextlib.suppress(FileNotFoundError):
                if read_holder(self.path) == holder:  # still the one judged stale: take it over
                    os.unlink(self.path)
            return self._try_exclusive() if not self.path.exists() else (read_holder(self.path) or {})
        self._fd, self._exclusive = fd, True
        self._write_holder(fd)
        return None

    def _stale(self, holder: dict | None) -> bool:
        """A fallback lock file nobody holds: emptied by a flock holder, left half-written a while
        ago, or naming a process of this host that is gone."""
        if holder is None:
            try:
                return time.time() - self.path.stat().st_mtime > 5 or self.path.stat().st_size == 0
            except FileNotFoundError:
                return True
        return holder.get("host") == socket.gethostname() and not _alive(holder.get("pid"))

    @staticmethod
    def _write_holder(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_info()) + "\n").encode("utf-8"), 0)

    def release(self) -> None:
        """Give the lock back (the file stays, emptied; the fallback's file is removed)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._exclusive:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            else:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor releases the flock
            self._exclusive = False


@contextlib.contextmanager
def launch_lock(run_dir: str | os.PathLike, *, wait: float = 0.0, shard=None):
    """The run lock for every process of a launch: the main process takes it and tells the others
    whether to go on (one process: just `RunLock`)."""
    from lobolib.experiment.distributed import current_shard, gather_object

    shard = shard or current_shard()
    lock = RunLock(run_dir, wait=wait)
    refusal = None
    if shard.is_main:
        try:
            lock.acquire()
        except LoboError as err:
            refusal = str(err)
    if shard.world > 1:
        refusal = gather_object([refusal], shard)[0]
    if refusal is not None:
        raise LoboError(refusal)
    try:
        yield lock
    finally:
        lock.release()
