"""The run's manifest (``<run>/manifest.json``): what produced the records — parameters, model
revisions, dataset fingerprints, lobolib version and git commit, package versions — and never a
secret.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from lobolib import __version__
from lobolib.errors import LoboError
from lobolib.experiment.files import atomic_write_text

MANIFEST = "manifest.json"


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """The run's manifest.json ({} when there is none yet)."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise LoboError(f"{path} is not valid JSON; delete it and rerun to write a fresh manifest") from None


def write_manifest(run_dir: str | os.PathLike, info: Mapping) -> Path:
    """Merge `info` into ``<run_dir>/manifest.json`` (nested dicts merged key by key, other values
    replaced) and write it atomically. Keeps ``created`` from the first write, sets ``updated``.
    Secrets are dropped first: any key naming a token (``hf_token``, ``HF_TOKEN``,
    ``use_auth_token``…; not ``max_new_tokens`` or ``tokenizer…``), a password, secret or api key,
    and any string value that looks like a Hugging Face token."""
    path = Path(run_dir) / MANIFEST
    manifest = scrub_secrets(_merge(read_manifest(run_dir), scrub_secrets(dict(info))))
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest.setdefault("created", now)
    manifest["updated"] = now
    atomic_write_text(path, json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def record_manifest(run_dir: str | os.PathLike, info: Mapping) -> Path:
    """Merge `info` into the manifest together with `manifest_base()` (versions, commit)."""
    return write_manifest(run_dir, {**manifest_base(), **info})

_SECRET_KEY = re.compile(r"token(?!s\b|s_|izer)|secret|password|passwd|api_?key|credential", re.IGNORECASE)
_HF_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


def is_secret_key(key: str) -> bool:
    """True for a key that names a credential: "hf_token", "HF_TOKEN", "token", "use_auth_token",
    "api_key", "password"; False for "max_new_tokens", "num_tokens", "tokenizer_revision"."""
    return bool(_SECRET_KEY.search(str(key)))


def scrub_secrets(value):
    """A copy of a nested dict/list structure without secret keys (``is_secret_key``) and without
    string values that look like a Hugging Face token."""
    if isinstance(value, Mapping):
        return {
            k: scrub_secrets(v)
            for k, v in value.items()
            if not is_secret_key(k) and not (isinstance(v, str) and _HF_TOKEN_VALUE.search(v))
        }
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(v) for v in value if not (isinstance(v, str) and _HF_TOKEN_VALUE.search(v))]
    return value


def _merge(old: Mapping, new: Mapping) -> dict:
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding `path` (default: lobolib's), or None
    when git or the repository is unavailable."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def manifest_base() -> dict:
    """What every manifest records: lobolib version, git commit, Python, platform and the
    versions of torch, transformers, datasets, numpy, pandas, scikit-learn."""
    return {
        "lobolib": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            name: _package_version(name)
            for name in ("torch", "transformers", "datasets", "numpy", "pandas", "scikit-learn")
        },
    }


def fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 (first 16 hex digits) of a data file, or of a folder's files (relative names and
    contents, in sorted order): for the manifest's dataset fingerprints."""
    path = Path(path)
    if not path.exists():
        raise LoboError(f"cannot fingerprint {path}: it does not exist")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path if path.is_dir() else path.parent)).encode("utf-8"))
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
