"""Preflight: every path, model, device and dataset of a run resolved before any work starts.

`check(config)` returns the config with every local path made absolute, after making sure that:

- each local model folder (or .gguf file), benchmark source, calibration file and the logs folder
  exists, and each local benchmark parses into items (subjects present, fields right);
- each hub model and dataset is in the local Hugging Face cache, or the hub can be reached;
- each model's `device_map` and `max_memory` name devices this machine has;
- the run folder (or the folder it will be made in) can be written and has room.

Any problem is one LoboError, so the CLI prints one line and exits 2 with nothing written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from lobolib.errors import LoboError
from lobolib.experiment.config import BenchmarkConfig, ModelConfig, RunConfig
from lobolib.experiment.files import check_writable

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
NAMED_CALIBRATION = ("c4", "wikitext2", "pubmed", "pubmedqa-train")


def check(config: RunConfig, *, items: bool = True) -> RunConfig:
    """The config with local paths absolute, or one LoboError (see the module docstring).
    `items=False` skips parsing the benchmarks' local files."""
    check_writable(config.output_dir, "outputs")
    if config.logs_dir is not None:
        existing(config.logs_dir, "logs_dir")
    if config.analysis.costs is not None:
        config = dataclasses.replace(config, analysis=dataclasses.replace(
            config.analysis, costs=existing(config.analysis.costs, "analysis.costs")))
    models = [_model(m, i) for i, m in enumerate(config.models)] if config.mode == "evaluate" else config.models
    benchmarks = {name: _source(bench, name) for name, bench in config.benchmarks.items()}
    config = dataclasses.replace(config, models=models, benchmarks=benchmarks,
                                 compression=[_calibration(s, i) for i, s in enumerate(config.compression)])
    if config.mode == "evaluate" and items:
        for name in config.enabled_benchmarks:
            _items(config, name)
    return config


def existing(text: str, where: str) -> str:
    """The absolute path of `text`, which must exist."""
    path = Path(text).expanduser()
    if not path.exists():
        raise LoboError(f"{where}: path not found: {text}")
    return str(path.resolve())


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..") or text.endswith(".gguf")


def _model(m: ModelConfig, index: int) -> ModelConfig:
    """The model spec must be valid (models.load_model's checks), its devices must exist and hold
    what max_memory asks; a local model folder or .gguf file must exist (absolute path kept) and
    hold loadable weights; anything else must be a hub id that is cached or reachable, whose
    files pass the same checks (safetensors weights, no pickle, a pinned commit for remote code)."""
    from lobolib import models

    where = f"models.{index}"
    spec = _spec_checked(lambda: models.validated_spec(m.spec()), where)
    _devices(spec, where)
    if m.embedded is not None:
        return m
    if m.packaged:
        models.smollm2_gguf()  # LoboError saying how to install it when absent
        return m
    if _looks_like_path(m.model) or Path(m.model).expanduser().exists():
        m = dataclasses.replace(m, model=existing(m.model, f"{where}.model"))
        spec["model"] = m.model
    elif not _HUB_ID.match(m.model):
        raise LoboError(f"{where}.model: {m.model!r} is neither an existing folder nor a hub id like org/name")
    elif not hub_reachable_or_cached(m.model, "model", m.revision, f"{where}.model"):
        spec["local_files_only"] = True  # check the cached snapshot, without asking the hub
    elif m.local_files_only:
        raise LoboError(f"{where}.model: {m.model!r} is not in the local Hugging Face cache and local_files_only is "
                        "set; download it first or set local_files_only: false")  # fmt: skip
    _spec_checked(lambda: models.check_files(spec), where)
    return m


def _spec_checked(check, where: str):
    try:
        return check()
    except LoboError as err:
        message = str(err)
        raise LoboError(message if message.startswith(where) else f"{where}: {message}") from None


def _devices(spec: dict, where: str) -> None:
    """device_map / max_memory may only name devices this machine has, and max_memory may not ask
    a device for more memory than it has."""
    import torch

    gpus = torch.cuda.device_count()
    device_map = spec["device_map"]
    named = []
    if isinstance(device_map, str) and device_map.startswith("cuda"):
        named.append(device_map)
    if isinstance(device_map, dict):
        named.extend(str(v) for v in device_map.values())
    named.extend(str(k) for k in (spec["max_memory"] or {}))
    for device in named:
        text = device.strip().lower().removeprefix("cuda:").removeprefix("cuda")
        if text in ("cpu", "disk", "mps", "meta"):
            continue
        index = int(text) if text.isdigit() else 0 if text == "" else None
        if index is None:
            raise LoboError(f"{where}: device {device!r} is not a GPU index, 'cuda:N', 'cpu' or 'disk'")
        if index >= gpus:
            have = f"{gpus} GPU{'s' if gpus != 1 else ''}" if gpus else "no GPU"
            raise LoboError(f"{where}: device {device!r} asks for GPU {index}, but this machine has {have}; "
                            "use device_map: auto (or cpu) and drop max_memory entries for missing GPUs")  # fmt: skip
    for device, size in (spec["max_memory"] or {}).items():
        _memory_fits(device, size, f"{where}.max_memory.{device}")


def _memory_fits(device, size, where: str) -> None:
    """A max_memory entry may not exceed the device's memory (a GPU's, or this machine's RAM)."""
    from accelerate.utils import convert_file_size_to_int

    wanted = convert_file_size_to_int(size)
    if wanted <= 0:
        raise LoboError(f"{where}: {size!r} leaves the device no memory; give a size such as 14GiB, or drop the entry")
    if isinstance(device, int):
        import torch

        total, what = torch.cuda.get_device_properties(device).total_memory, f"GPU {device} has"
    elif device == "cpu":
        total, what = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine has"
    else:
        return
    if wanted > total:
        raise LoboError(f"{where}: {size} is more than the {total / 2**30:.1f} GiB {what}; give at most that")


def hub_reachable_or_cached(repo_id: str, repo_type: str, revision: str | None, where: str) -> bool:
    """True when the hub answers, False when `repo_id` is only in the local Hugging Face cache;
    LoboError when neither."""
    from huggingface_hub import try_to_load_from_cache

    probe = "config.json" if repo_type == "model" else "README.md"
    cached = try_to_load_from_cache(repo_id, probe, revision=revision, repo_type=repo_type)
    if isinstance(cached, str):
        return False
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    if offline or not _hub_answers():
        raise LoboError(
            f"{where}: {repo_id!r} is not in the local Hugging Face cache and the hub "
            f"{'is switched off (HF_HUB_OFFLINE)' if offline else 'cannot be reached'}; give a local copy, "
            "set HF_HOME to a cache that has it, or go online"
        )
    return True


def _hub_answers(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers an HTTPS request within `timeout` seconds."""
    import socket
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=timeout)  # noqa: S310 - a fixed https URL
    except (OSError, socket.timeout, ValueError):
        return False
    return True


def _source(bench: BenchmarkConfig, name: str) -> BenchmarkConfig:
    if not bench.enabled or bench.source in ("embedded", "hub"):
        return bench
    if bench.declared and not _local(bench.source):
        return bench  # a hub dataset id
    return dataclasses.replace(bench, source=existing(bench.source, f"benchmarks.{name}.source"))


def _local(source: str) -> bool:
    from lobolib.benchmarks.fields import FILE_SUFFIXES

    return source.lower().endswith(FILE_SUFFIXES) or _looks_like_path(source) or Path(source).expanduser().exists()


def _calibration(s, index: int):
    """Local calibration files and folders must exist (absolute paths kept)."""
    c = s.calibration
    if c is None:
        return s
    where = f"compression.{index}.calibration"
    source = c.source if c.source in NAMED_CALIBRATION else existing(c.source, f"{where}.source")
    data_dir = existing(c.data_dir, f"{where}.data_dir") if c.data_dir is not None else None
    return dataclasses.replace(s, calibration=dataclasses.replace(c, source=source, data_dir=data_dir))


def _items(config: RunConfig, name: str) -> None:
    """Parse a benchmark's local files (hub datasets: only find them), naming it in any error."""
    from lobolib.experiment import catalogue

    bench = config.benchmarks[name]
    if bench.source == "embedded":
        return
    if bench.source == "hub":
        from lobolib.benchmarks import BUILT_IN

        hub_id = BUILT_IN[name].hub.split(" ")[0]
        hub_reachable_or_cached(hub_id, "dataset", None, f"benchmarks.{name}.source")
        return
    try:
        catalogue.load_items(config, name)
    except LoboError as err:
        message = str(err)
        raise LoboError(message if message.startswith(f"benchmarks.{name}") or message.startswith(name)
                        else f"benchmarks.{name}: {message}") from None
