"""Datasets from the Hugging Face hub, through `datasets`; any failure becomes one LoboError."""

from __future__ import annotations

from lobolib.errors import LoboError


def hub_dataset(name: str, config: str | None, split: str, **kwargs):
    """A dataset split from the hub; failures (offline, unknown name) as one LoboError."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, **kwargs)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one user-facing message
        where = f"{name} ({config}, split {split})" if config else f"{name} (split {split})"
        raise LoboError(
            f"could not load {where} from the Hugging Face hub: {type(err).__name__}: {err}; check the "
            "network (or HF_HUB_OFFLINE) or give a local copy of the official files as source"
        ) from err


def is_hub(source) -> bool:
    """Whether a benchmark `source` means the hub: None or "hub"."""
    return source is None or str(source) == "hub"
