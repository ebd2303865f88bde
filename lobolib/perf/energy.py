"""Energy a GPU used, from NVML's cumulative counter (`nvmlDeviceGetTotalEnergyConsumption`:
millijoules since the driver loaded, on Volta and later cards). The whole board is counted, idle
power included. `pynvml` (the `nvidia-ml-py` package) is an optional import: without it, on the
CPU, or on a card without the counter, `EnergyCounter.why_not` says why and `joules()` is None."""

from __future__ import annotations

import torch


def _plain_uuid(uuid) -> str:
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    return text.lower().removeprefix("gpu-")


class EnergyCounter:
    """NVML's energy counter of the card behind a torch device (found by UUID, so
    CUDA_VISIBLE_DEVICES renumbering does not matter)."""

    def __init__(self, device: torch.device):
        self.why_not: str | None = None
        self._nvml = self._handle = None
        if device.type != "cuda":
            self.why_not = "no GPU energy counter on the CPU"
            return
        try:
            import pynvml
        except ImportError:
            self.why_not = "pynvml is not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            wanted = _plain_uuid(torch.cuda.get_device_properties(device).uuid)
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            found = [h for h in handles if _plain_uuid(pynvml.nvmlDeviceGetUUID(h)) == wanted]
            if not found:
                self.why_not = f"NVML lists no card with this device's UUID ({wanted}; a MIG slice?)"
                return
            pynvml.nvmlDeviceGetTotalEnergyConsumption(found[0])
        except pynvml.NVMLError as error:
            self.why_not = f"NVML energy counter unavailable: {error}"
            return
        self._nvml, self._handle = pynvml, found[0]

    def joules(self) -> float | None:
        """The counter now, in joules (None when there is none)."""
        if self._handle is None:
            return None
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
