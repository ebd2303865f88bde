"""The calibration pass shared by wanda, sparsegpt, heads and gptq: one decoder layer at a time.

As in both papers' code (Wanda's ``prune_wanda``, SparseGPT's ``llama_sequential``): the
calibration tokens are embedded and caught at the input of the first decoder layer; then for
each layer in order,

1. observe: the layer runs on every calibration sample while hooks on its linear layers hand
   their inputs ``x`` ([tokens, in_features]) to the method's observers (column norms for
   Wanda, the Hessian ``2 X Xᵀ / n`` for SparseGPT/GPTQ, per-head Grams for heads); the forward
   stops at the last linear's input (the down projection's product and what follows are not
   needed to observe);
2. compress: the method changes the layer's weights from what was observed;
3. propagate: the compressed layer runs again on every sample, and its outputs are the next
   layer's inputs. Each layer is thus calibrated on the outputs of the layers before it, already
   compressed.

Linear layers that receive the same input tensor (q/k/v; gate/up in Llama-style blocks) are
detected on the first batch and share one observer: one Hessian, and SparseGPT/GPTQ sweep them
together as one stacked matrix.

What is held where (n samples x L tokens, hidden size d, model dtype; 7B Mistral in bf16 with
128 x 2048 tokens: d = 4096, one buffer = n·L·d·2 bytes = 2 GiB):

- two activation buffers (the current layer's inputs and outputs), either on the layer's device
  (``offload="device"``) or in pinned CPU memory (``offload="cpu"``), in which case each batch
  is copied to the device for its forward and back. ``"auto"`` keeps them on the device when
  both fit in ``ON_DEVICE_FRACTION`` of its free memory (an H200 with a 7B model: yes), else on the
  CPU (a 14 GiB T4 holding half of a 7B fp16 model: no). At most one batch of activations, or
  the one layer's buffers, is on a GPU at a time;
- on the layer's device: the weights (wherever ``device_map`` put them: each layer is observed
  and compressed on its own device, the hidden states and the layer arguments move to it), one
  batch's intermediate activations (``CALIBRATION_BATCH_TOKENS`` tokens), and the observers of
  that one layer only (Hessians: d² fp32 for q/k/v, o and gate/up each, plus the down
  projection's intermediate² — about 1 GiB for 7B Mistral), freed before the next layer.

Decoder layers are called as the model's own forward calls them: the keyword arguments
(attention mask, position ids, and in transformers 5 the rotary ``position_embeddings``) are
caught together with the first layer's input, once per batch size, and moved to each layer's
device.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn

from lobolib.compress.magnitude import _is_linear
from lobolib.errors import LoboError

CALIBRATION_BATCH_TOKENS = 16384
"""Tokens per forward of one layer (batch size = this // seq_len, at least 1)."""

ON_DEVICE_FRACTION = 0.25
"""With offload="auto", keep both activation buffers on the device if they fit in this fraction
of its free memory."""

OFFLOADS = ("auto", "cpu", "device")


class Observer(Protocol):
    """Accumulates statistics of a linear layer's inputs x ([tokens, in_features])."""

    def add(self, x: torch.Tensor) -> None: ...


class LayerMethod(Protocol):
    """What a calibrated method does to one decoder layer."""

    def observers(self, index: int, layer: nn.Module) -> dict[str, Observer]:
        """{name of a linear inside the layer: its observer} (names as layer.named_modules)."""

    def compress(self, index: int, layer: nn.Module, observed: dict[str, Observer]) -> None:
        """Change the layer's weights; `observed` maps the same names to their (maybe shared)
        observers."""


class ColumnNorms:
    """Sum of squares of each input feature over the calibration tokens (Wanda's ||X_j||²), fp32."""

    def __init__(self, features: int, device):
        self.sumsq = torch.zeros(features, dtype=torch.float32, device=device)

    def add(self, x: torch.Tensor) -> None:
        for chunk in x.split(4096):
            self.sumsq += chunk.float().square().sum(0)


# ---------------------------------------------------------------------------------------------
# The model's pieces


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (``model.model.layers`` for Llama/Mistral/Qwen; else the
    longest ModuleList of blocks holding linear layers)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers):
        return layers
    best = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                any(_is_linear(m) for m in block.modules()) for block in module):
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise LoboError(f"{type(model).__name__} has no stack of decoder layers (a ModuleList of "
                        "blocks with linear layers); calibrated methods need a transformer")
    return best


def layer_linears(layer: nn.Module) -> list[tuple[str, nn.Module]]:
    """The linear layers inside one decoder layer, in named_modules order."""
    return [(name, module) for name, module in layer.named_modules() if _is_linear(module)]


def check_tokens(model: nn.Module, tokens) -> torch.Tensor:
    """The calibration tokens, checked: a 2-D integer tensor of ids inside the vocabulary."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point() \
            or tokens.dtype == torch.bool or tokens.numel() == 0:
        got = f"a tensor of shape {tuple(tokens.shape)} and dtype {tokens.dtype}" \
            if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise LoboError(f"calibration must be a LongTensor [n_samples, seq_len] of token ids, got {got} "
                        "(lobolib.calibration.calibration_tokens makes one)")
    embedding = model.get_input_embeddings()
    vocab = embedding.num_embeddings
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab:
        raise LoboError(f"calibration token ids span {low}..{high} but the model's vocabulary has {vocab} "
                        "ids: were the tokens made with another model's tokenizer?")
    return tokens.to(torch.int64)


def _device_of(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def _to(value, device):
    """`value` with every tensor inside (tuples, lists, dicts) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# Activations


class Activations:
    """One layer's inputs or outputs for every calibration sample: [n, L, d] on `device`, pinned
    when on the CPU of a CUDA host. `load` gives a batch on the layer's device, `store` writes one."""

    def __init__(self, shape, dtype, device):
        pin = device.type == "cpu" and torch.cuda.is_available()
        self.data = torch.empty(shape, dtype=dtype, device=device, pin_memory=pin)

    @property
    def device(self) -> torch.device:
        return self.data.device

    def follow(self, device: torch.device) -> None:
        """On-device buffers move to the device of the next layer (device_map across cards)."""
        if self.data.device.type != "cpu" and self.data.device != device:
            self.data = self.data.to(device)

    def load(self, start: int, stop: int, device) -> torch.Tensor:
        return self.data[start:stop].to(device, non_blocking=True)

    def store(self, start: int, stop: int, values: torch.Tensor) -> None:
        self.data[start:stop].copy_(values, non_blocking=True)


def storage_device(offload: str, layer_devices, buffer_bytes: int, free_bytes=None) -> torch.device:
    """Where the two activation buffers live (see the module docstring): the first layer's
    device or the CPU. `free_bytes(device)` reads a GPU's free memory (torch.cuda.mem_get_info)."""
    first = layer_devices[0]
    if offload == "cpu" or first.type == "cpu":
        return torch.device("cpu")
    if offload == "device":
        return first
    free_bytes = free_bytes or (lambda device: torch.cuda.mem_get_info(device)[0])
    free = min(free_bytes(device) for device in set(layer_devices) if device.type != "cpu")
    return first if 2 * buffer_bytes <= ON_DEVICE_FRACTION * free else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# The pass


class _Caught(Exception):
    """Raised by the hook on the first layer once its inputs are caught."""


def _first_layer_inputs(model, layers, tokens, batch, storage: torch.device):
    """Embedded calibration samples at the first layer's input, and the layer's keyword
    arguments per batch size (caught by a pre-hook that stops the forward there)."""
    caught = {}

    def catch(module, args, kwargs):
        caught["hidden"] = args[0] if args else kwargs["hidden_states"]
        caught["kwargs"] = {k: v for k, v in kwargs.items()
                            if k not in ("hidden_states", "past_key_values", "cache", "use_cache")}
        raise _Caught

    embed_device = model.get_input_embeddings().weight.device
    inputs, arguments = None, {}
    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for start in range(0, tokens.shape[0], batch):
            ids = tokens[start:start + batch].to(embed_device)
            try:
                model(input_ids=ids, use_cache=False)
            except _Caught:
                pass
            else:
                raise LoboError(f"{type(model).__name__}'s forward never reached its first decoder layer")
            hidden = caught.pop("hidden")
            if inputs is None:
                inputs = Activations((tokens.shape[0], *hidden.shape[1:]), hidden.dtype, storage)
            inputs.store(start, start + hidden.shape[0], hidden)
            arguments.setdefault(hidden.shape[0], caught.pop("kwargs"))
    finally:
        handle.remove()
    return inputs, arguments


class _Observed(Exception):
    """Ends a layer's observe forward once its last linear's input is seen: what follows (that
    linear's product, the rest of the layer) is not needed to observe it."""


@contextmanager
def _observing(layer: nn.Module, observers: dict[str, Observer]):
    """Pre-forward hooks feeding each named linear's input to its observer; linears fed the same
    tensor on the first batch share the first one's observer (updated in `observers`). From the
    second batch on, the hook of the last linear to run (in the first batch's call order) raises
    `_Observed` after observing, so the layer's forward stops before that linear's product."""
    owners: dict[str, Observer] = dict(observers)
    shared: set[str] = set()
    state = {"first": True, "seen": [], "order": [], "last": None}

    def hook_for(name):
        def hook(module, args):
            x = args[0]
            if state["first"]:
                state["order"].append(name)
                for tensor, leader in state["seen"]:
                    if tensor is x and type(owners[leader]) is type(owners[name]):
                        observers[name] = observers[leader]
                        shared.add(name)
                        return
                state["seen"].append((x, name))
            if name not in shared:
                observers[name].add(x.reshape(-1, x.shape[-1]))
            if name == state["last"]:
                raise _Observed
        return hook

    handles = [layer.get_submodule(name).register_forward_pre_hook(hook_for(name)) for name in observers]

    def batch_done():
        if state["first"] and state["order"]:
            state["last"] = state["order"][-1]
        state["first"], state["seen"] = False, []

    try:
        yield batch_done
    finally:
        for handle in handles:
            handle.remove()


def _observe(layer, x, kwargs) -> None:
    """One batch through the layer for its observers (stopped early by `_Observed`)."""
    try:
        _forward(layer, x, kwargs)
    except _Observed:
        pass


def _forward(layer, x, kwargs):
    out = layer(x, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run(model: nn.Module, tokens: torch.Tensor, method: LayerMethod, *, offload: str = "auto",
        batch_size: int | None = None) -> dict:
    """Calibrate and compress `model` layer by layer with `method` (see the module docstring).

    tokens: LongTensor [n_samples, seq_len] (checked with check_tokens). offload: "auto", "cpu"
    or "device" (where the activation buffers live). batch_size: samples per layer forward
    (default CALIBRATION_BATCH_TOKENS // seq_len). Returns {"layers", "batch_size", "offload",
    "stage_seconds" (capture, observe, compress, propagate), "seconds"}.
    """
    started = time.perf_counter()
    if offload not in OFFLOADS:
        raise LoboError(f"offload must be one of {', '.join(OFFLOADS)}; got {offload!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise LoboError(f"batch_size must be a positive integer (samples per layer forward), got {batch_size!r}")
    tokens = check_tokens(model, tokens)
    layers = decoder_layers(model)
    n, length = tokens.shape
    batch = batch_size or max(1, CALIBRATION_BATCH_TOKENS // length)
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    element = next(model.parameters()).element_size()
    storage = storage_device(offload, [_device_of(layer) for layer in layers],
                             n * length * (hidden or 0) * element)
    training = model.training
    model.eval()
    try:
        info = _run_layers(model, layers, tokens, method, batch, storage)
    finally:
        model.train(training)
    return info | {"seconds": time.perf_counter() - started}


def _run_layers(model, layers, tokens, method, batch, storage) -> dict:
    n = tokens.shape[0]
    clock = _Clock(layers)
    inputs, arguments = _first_layer_inputs(model, layers, tokens, batch, storage)
    outputs = Activations(inputs.data.shape, inputs.data.dtype, storage)
    placed: dict = {}

    def kwargs_for(size, device):
        if (size, device) not in placed:
            placed[(size, device)] = _to(arguments[size], device)
        return placed[(size, device)]

    seconds = {"capture": clock.lap(), "observe": 0.0, "compress": 0.0, "propagate": 0.0}
    for index, layer in enumerate(layers):
        device = _device_of(layer)
        inputs.follow(device)
        outputs.follow(device)
        observers = method.observers(index, layer)
        with _observing(layer, observers) as batch_done:
            for start in range(0, n, batch):
                x = inputs.load(start, start + batch, device)
                _observe(layer, x, kwargs_for(x.shape[0], device))
                batch_done()
        seconds["observe"] += clock.lap()
        method.compress(index, layer, observers)
        del observers
        seconds["compress"] += clock.lap()
        if index + 1 < len(layers):
            for start in range(0, n, batch):
                x = inputs.load(start, start + batch, device)
                outputs.store(start, start + x.shape[0], _forward(layer, x, kwargs_for(x.shape[0], device)))
            inputs, outputs = outputs, inputs
        seconds["propagate"] += clock.lap()
    return {"layers": len(layers), "batch_size": batch, "offload": storage.type,
            "stage_seconds": seconds}


class _Clock:
    """Wall time between laps, the layers' GPUs synchronized at each lap."""

    def __init__(self, layers):
        self.devices = {_device_of(layer) for layer in layers if _device_of(layer).type == "cuda"}
        self.last = time.perf_counter()

    def lap(self) -> float:
        for device in self.devices:
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed
