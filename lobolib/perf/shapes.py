"""What every bench shares: a model of the real architecture with random weights, timing with the
device's queued work included, peak memory (CUDA's allocator, or sampled RSS on the CPU), the
card's practical matmul peak, and the table formatting."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import torch

from lobolib.errors import LoboError

CPU_SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
}
"""Small enough for CI to run in seconds on a CPU; on CUDA the default is Mistral-7B's shape."""

GIB = 1024**3


def resolve_device(device=None) -> torch.device:
    """`device`, or CUDA when available, else the CPU; LoboError for CUDA where there is none."""
    try:
        chosen = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise LoboError(f"--device {device!r} is not a device ({error}); use cpu or cuda") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise LoboError(f"--device {device} asks for CUDA but this machine has no CUDA GPU; use --device cpu")
    return chosen


def device_name(device: torch.device) -> str:
    """"cuda:0 (NVIDIA H200)" or "cpu (cpu)": the device and what it is."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{device} ({name})"


# ---------------------------------------------------------------------------------------------


def build_model(shape: dict, device: torch.device, dtype: torch.dtype):
    """A MistralForCausalLM of the given shape, allocated on `device` without weight init."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(**shape)
    with torch.device("meta"):
        model = MistralForCausalLM(config)
    model = model.to(dtype=dtype).to_empty(device=device)
    rebuild_rotary(model, device)
    return model.eval()


def rebuild_rotary(model, device) -> None:
    """`to_empty` leaves buffers uninitialised: rebuild the rotary embedding's frequencies."""
    rotary = model.model.rotary_emb
    with torch.device("cpu"):
        fresh = type(rotary)(config=model.config)  # the constructor's signature differs across versions
    model.model.rotary_emb = fresh.to(device)


@torch.no_grad()
def fill(model, seed: int) -> None:
    """Random weights N(0, 0.02), the same for a given seed (init scale of Mistral)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for parameter in model.parameters():
        parameter.normal_(0.0, 0.02, generator=generator)


# ---------------------------------------------------------------------------------------------


class RssPeak:
    """Peak resident memory of this process above its level at start, sampled from /proc (Linux).

    Coarse (1 ms sampling, allocator caching), but torch's CPU allocations are invisible to
    tracemalloc. `extra_gib` is None where /proc/self/statm does not exist."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.path = Path("/proc/self/statm")
        import resource  # Unix only, like /proc

        self.page = resource.getpagesize()
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self):
        try:
            return int(self.path.read_text().split()[1]) * self.page
        except (OSError, IndexError, ValueError):
            return None

    def _run(self):
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def __enter__(self):
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.start is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() or 0)

    @property
    def extra_gib(self):
        return None if self.start is None else (self.peak - self.start) / GIB


def timed(run, device: torch.device) -> float:
    """Seconds of `run()`, the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def measure(run, device: torch.device) -> tuple[float, float | None]:
    """(seconds, extra peak GiB) of `run()`; CUDA: max_memory_allocated above the start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        seconds = timed(run, device)
        return seconds, (torch.cuda.max_memory_allocated(device) - base) / GIB
    with RssPeak() as peak:
        seconds = timed(run, device)
    return seconds, peak.extra_gib


def matmul_flops(device: torch.device, dtype=torch.bfloat16, size: int | None = None, reps: int = 10) -> float:
    """Achieved FLOP/s of a large square matrix product: the device's practical peak (size None:
    8192 on CUDA, 1024 on the CPU)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def products(count: int) -> None:
        for _ in range(count):
            a @ b

    products(3)
    return 2 * size**3 * reps / timed(lambda: products(reps), device)


def fmt(value, spec: str) -> str:
    """A table cell: n/a for None, yes/NO for a bool, else `value` in `spec`."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)



def write_json(result: dict, out) -> None:
    """Write `result` as indented JSON to the file `out` (nothing when `out` is None)."""
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
