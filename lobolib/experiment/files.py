"""Files of a run: atomic writes, file-name-safe slugs, and a folder's writability.

A write that fails because the folder is read-only, not ours, or full (EACCES, EPERM, EROFS,
ENOSPC, EDQUOT) raises one LoboError naming the path; the file it was replacing is left intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from lobolib.errors import LoboError

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SLUG_MAX = 120


WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})
MIN_FREE_BYTES = 64 * 2**20  # a run folder with less free space than this is refused before any work


def cannot_write(path: str | os.PathLike, err: OSError) -> LoboError:
    """The one-line error for a write refused by the file system (see WRITE_ERRNOS)."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only"}.get(err.errno, "permission denied")  # fmt: skip
    fix = "free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "fix its permissions"
    return LoboError(f"cannot write {path}: {what}; {fix} or write the run elsewhere with --out DIR")


def make_dirs(path: str | os.PathLike) -> Path:
    """mkdir -p, with a refusal by the file system as one LoboError naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise cannot_write(path, err) from None
        raise
    return path


def check_writable(folder: str | os.PathLike, where: str) -> None:
    """LoboError unless `folder` (or, when it does not exist yet, the nearest folder above it,
    where it would be created) can be written and has MIN_FREE_BYTES free. Writes nothing."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise LoboError(f"{where}: {existing} is a file, not a folder; give another output folder with --out DIR")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = _read_only(existing)
        err = OSError(errno.EROFS if read_only else errno.EACCES, "")
        raise LoboError(f"{where}: " + str(cannot_write(existing, err)))
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise LoboError(f"{where}: cannot write {existing}: only {free / 2**20:.1f} MiB free (at least "
                        f"{MIN_FREE_BYTES // 2**20} MiB needed); free some space or write the run elsewhere with --out DIR")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path atomically: temp file in the same folder, flush + fsync, os.replace.
    The file gets the permissions a plain new file would get (the umask decides). A read-only,
    foreign or full folder raises one LoboError naming the path, the old file intact."""
    path = Path(path)
    try:
        _atomic_write(path, text)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise cannot_write(path, err) from None
        raise


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _umask() -> int:
    """The process umask: read from /proc where it can be (setting it to read it back races with
    other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def slug(name: str) -> str:
    """A file-name-safe, readable and unique slug of a name such as a model id or a method.

    "BioMistral/BioMistral-7B" -> "BioMistral--BioMistral-7B". Plain names (segments of letters,
    digits, ``.``, ``_``, ``-`` that neither start nor end with ``-`` and hold no ``--``, joined
    by ``/``) map one-to-one this way; any other name (a local path, spaces, ``:``) gets its
    characters outside that set replaced by ``_`` and a ``~`` plus 10 hex digits of its SHA-256
    appended, so two different names never share a slug.
    """
    if not isinstance(name, str) or not name.strip():
        raise LoboError(f"a name must be a non-empty string, got {name!r}")
    segments = name.split("/")
    plain = all(_SAFE_SEGMENT.fullmatch(s) and "--" not in s and not s.endswith("-") for s in segments)
    readable = "--".join(segments)
    if plain and len(readable) <= _SLUG_MAX:
        return readable
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", readable).strip("._-")[:_SLUG_MAX] or "name"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned}~{digest}"
