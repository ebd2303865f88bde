"""Files of a run: atomic writes and file-name-safe slugs."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from lobolib.errors import LoboError

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SLUG_MAX = 120


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path atomically: temp file in the same folder, flush + fsync, os.replace.
    The file gets the permissions a plain new file would get (the umask decides)."""
    path = Path(path)
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
