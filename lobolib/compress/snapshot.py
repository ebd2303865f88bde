"""The dense weights of the compressible matrices, kept to restore them in place.

A sweep over a method that does not nest (lobolib.compress.methods: everything but magnitude)
must start each level from the dense model. Reloading the model for every level costs minutes on
a 7B model; restoring the matrices in place costs a copy.

- ``Snapshot.take(model)``: a copy in CPU memory (pinned on a CUDA host, so the copy back runs
  at full PCIe speed): the weights and biases of lobolib.prune.prunable_linears, about the size
  of the model (13.5 GiB for 7B in bf16).
- ``Snapshot.from_files(model, folder)``: when the host cannot hold a copy, restores by reading
  the same tensors again from the model's safetensors files (lazily, one tensor at a time).

``restore(model)`` writes the dense values back into the same parameters (any device, as
``device_map`` placed them); the weights are then bit-identical to the snapshot's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lobolib.compress.magnitude import prunable_linears, synchronize
from lobolib.errors import LoboError


def _tensors(model: nn.Module, include_lm_head: bool) -> dict[str, torch.Tensor]:
    """{parameter name: tensor} of the compressible matrices' weights and biases."""
    found = {}
    for name, module in prunable_linears(model, include_lm_head=include_lm_head):
        found[f"{name}.weight"] = module.weight
        if getattr(module, "bias", None) is not None:
            found[f"{name}.bias"] = module.bias
    return found


class Snapshot:
    """Dense copies of the compressible parameters, restored in place with ``restore``."""

    def __init__(self, source: dict, include_lm_head: bool, reader=None):
        self.source, self.include_lm_head, self.reader = source, include_lm_head, reader

    @classmethod
    @torch.no_grad()
    def take(cls, model: nn.Module, include_lm_head: bool = False) -> "Snapshot":
        """A copy in CPU memory (pinned when CUDA is available)."""
        pin = torch.cuda.is_available()
        copies = {}
        for name, tensor in _tensors(model, include_lm_head).items():
            if tensor.device.type == "meta":
                raise LoboError(f"cannot snapshot {name}: it is offloaded (meta device); load the model "
                                "fully into CPU/GPU memory")
            copy = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
            copies[name] = copy.copy_(tensor.detach())
        return cls(copies, include_lm_head)

    @classmethod
    def from_files(cls, model: nn.Module, folder, include_lm_head: bool = False) -> "Snapshot":
        """Restores from the model's safetensors files in `folder` instead of a copy in memory."""
        names = list(_tensors(model, include_lm_head))
        where = _safetensors_index(Path(folder))
        missing = [name for name in names if name not in where]
        if missing:
            raise LoboError(f"{folder} has no tensor {missing[0]} (and {len(missing) - 1} more) in its "
                            "safetensors files: give the folder the model was loaded from, or use Snapshot.take")
        return cls({name: where[name] for name in names}, include_lm_head, reader=_read_tensor)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (0 when restoring from files)."""
        if self.reader is not None:
            return 0
        return sum(t.numel() * t.element_size() for t in self.source.values())

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Write the dense values back into the model's parameters, in place."""
        targets = _tensors(model, self.include_lm_head)
        if set(targets) != set(self.source):
            raise LoboError("this snapshot was taken of another model (its matrices differ): take a "
                            "snapshot of the model you restore")
        for name, tensor in targets.items():
            value = self.reader(self.source[name], name) if self.reader else self.source[name]
            if value.shape != tensor.shape:
                raise LoboError(f"snapshot tensor {name} has shape {tuple(value.shape)}, the model's "
                                f"{tuple(tensor.shape)}: not the same model")
            tensor.detach().copy_(value, non_blocking=self.reader is None)
        synchronize(targets.values())


def _safetensors_index(folder: Path) -> dict[str, Path]:
    """{tensor name: file} over a folder's safetensors (sharded with an index, or single files)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        mapping = json.loads(index.read_text())["weight_map"]
        return {name: folder / file for name, file in mapping.items()}
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LoboError(f"no safetensors files in {folder}: Snapshot.from_files needs the model's "
                        "safetensors checkpoint; use Snapshot.take instead")
    where = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            where.update({name: file for name in handle.keys()})
    return where


def _read_tensor(file: Path, name: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return handle.get_tensor(name)
