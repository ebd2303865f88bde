"""Load a causal language model and its tokenizer from a model spec (a mapping from a parameters file).

Safe by default: weights load as safetensors, pickle weights (.bin) only with `allow_pickle_weights`,
`trust_remote_code` stays off unless the spec turns it on. A Hugging Face token for gated models
(Mistral) is read by huggingface_hub from HF_TOKEN / HUGGING_FACE_HUB_TOKEN; this module never passes,
prints or stores it, and scrubs it from every error message.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from lobolib.errors import LoboError

SPEC_DEFAULTS = {
    "model": None,
    "revision": None,
    "dtype": "auto",
    "device_map": None,
    "max_memory": None,
    "trust_remote_code": False,
    "allow_pickle_weights": False,
    "local_files_only": False,
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
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


def resolve_dtype(name: str = "auto", device_map=None) -> torch.dtype:
    """The torch dtype for a spec's `dtype` name.

    "auto" means bfloat16 on a CUDA GPU that runs it natively (Ampere or newer), float16 on an older GPU
    (a Kaggle T4) and float32 when the model goes to the CPU (no CUDA, or device_map "cpu" / all-CPU).
    """
    if not isinstance(name, str) or (name != "auto" and name not in DTYPES):
        raise LoboError(f"model dtype {name!r} is not one of: auto, {', '.join(DTYPES)}")
    if name != "auto":
        return DTYPES[name]
    if not torch.cuda.is_available() or _all_on_cpu(device_map):
        return torch.float32
    try:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 had no emulation flag and checked native support
        native_bf16 = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native_bf16 else torch.float16


def load_model(spec: Mapping):
    """Load (model, tokenizer) from a model spec; the model in eval mode, the tokenizer padding on the
    left with a pad token, ready for batched generation. See SPEC_DEFAULTS for the keys."""
    spec = _validated(spec)
    local_dir = _local_dir(spec["model"])
    if spec["allow_pickle_weights"]:
        warnings.warn(
            f"allow_pickle_weights is on for {spec['model']!r}: pickle (.bin) weights can run arbitrary "
            "code when loaded; use it only for sources you trust",
            stacklevel=2,
        )
    elif local_dir is not None and _has_only_pickle_weights(local_dir):
        raise LoboError(
            f"model directory {local_dir} holds only pickle weights (pytorch_model*.bin), which can run "
            "code when loaded; convert them to safetensors, or set `allow_pickle_weights: true` in the "
            "model spec if you trust the source"
        )
    try:
        tokenizer = _load_tokenizer(spec)
        model = _load_weights(spec)
    except Exception as exc:  # mapped to one LoboError, or re-raised untouched
        error = _as_lobo_error(exc, spec)
        if error is None:
            raise
        raise error from None  # the cause's text is in the message, scrubbed of any token
    model.eval()
    if local_dir is None and getattr(model.config, "_commit_hash", None) is None:
        model.config._commit_hash = _cached_commit(spec["model"], spec["revision"])  # transformers 5 drops it
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def model_revision(model) -> str | None:
    """The hub commit hash the model's files came from (for the run manifest); None for a local dir."""
    return getattr(model.config, "_commit_hash", None)


def describe_model(model) -> dict:
    """A JSON-ready summary for notebooks and the manifest: name, revision, parameters, dtype, devices."""
    devices = sorted({str(p.device) for p in model.parameters()})
    device_map = getattr(model, "hf_device_map", None)
    return {
        "name_or_path": getattr(model.config, "_name_or_path", None),
        "revision": model_revision(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(model.dtype).removeprefix("torch."),
        "devices": devices,
        "hf_device_map": {k: str(v) for k, v in device_map.items()} if device_map else None,
    }


# --- spec validation -------------------------------------------------------------------------------


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
        raise LoboError("model spec needs `model`: a Hugging Face id (org/name) or a local directory")
    if spec["revision"] is not None and not isinstance(spec["revision"], str):
        raise LoboError(f"model spec `revision` must be a branch, tag or commit string, got {spec['revision']!r}")
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


# --- loading ---------------------------------------------------------------------------------------


def _local_dir(model: str) -> Path | None:
    """The directory when `model` names one; LoboError when it looks like a path that does not exist."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    looks_like_path = model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1
    if looks_like_path or path.exists():
        raise LoboError(f"model directory {model!r} does not exist or is not a directory; {HOW_TO_GET_A_MODEL}")
    return None


def _has_only_pickle_weights(directory: Path) -> bool:
    has_safetensors = any(directory.glob("*.safetensors")) or any(directory.glob("*.safetensors.index.json"))
    return not has_safetensors and any(directory.glob("pytorch_model*.bin"))


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub model was loaded from: the name of its snapshot folder in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(path, str) and Path(path).parent.parent.name == "snapshots":
        return Path(path).parent.name
    return None


def _hub_kwargs(spec: dict) -> dict:
    """Keyword arguments shared by tokenizer and model loading (no token: huggingface_hub reads the env)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return {
        "revision": spec["revision"],
        "trust_remote_code": spec["trust_remote_code"],
        "local_files_only": spec["local_files_only"] or offline,
    }


def load_tokenizer(spec: Mapping):
    """Only the tokenizer of a model spec (same checks and padding setup as `load_model`), for
    prompt checks that need no weights."""
    return _load_tokenizer(_validated(spec))


def _load_tokenizer(spec: dict):
    """The model's tokenizer, padding on the left, with a pad token (eos or unk when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"], **_hub_kwargs(spec))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise LoboError(f"tokenizer of {spec['model']!r} has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def _load_weights(spec: dict):
    """The model itself, safetensors unless pickle weights were allowed, on the spec's devices."""
    import transformers
    from packaging.version import Version
    from transformers import AutoModelForCausalLM

    dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    kwargs = {
        **_hub_kwargs(spec),
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
    return AutoModelForCausalLM.from_pretrained(spec["model"], **kwargs)


# --- errors ----------------------------------------------------------------------------------------


def _as_lobo_error(exc: Exception, spec: dict) -> LoboError | None:
    """One LoboError saying why the model could not be loaded and what to do; None for a program bug."""
    from huggingface_hub import errors as hub

    if isinstance(exc, LoboError):
        return exc
    chain = _cause_chain(exc)
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
