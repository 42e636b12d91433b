"""Devices and precisions: checked against this machine before anything is loaded."""

from __future__ import annotations

import torch

from circuitlab.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_DTYPE = "float32"
DEFAULT_DEVICE = "cpu"


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def check_device(device: str | torch.device) -> torch.device:
    """A device this machine has: `cpu`, `cuda`/`cuda:N` with N below the GPU count, `mps`, ..."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError("device", f"is not a torch device: {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise ConfigError("device", "meta holds no weights; choose cpu or a GPU")
    backend = getattr(torch, dev.type, None) if dev.type != "mps" else torch.backends.mps
    if backend is None or not backend.is_available():
        have = "torch was built without CUDA" if dev.type == "cuda" and torch.version.cuda is None else "none found"
        raise ConfigError("device", f"{device}: this machine has no {dev.type} device ({have})")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if dev.index is not None and dev.index >= count:
        raise ConfigError("device", f"{device}: this machine has {count} {dev.type} device(s), numbered from 0")
    return dev


def default_dtype(device: torch.device) -> str:
    """bfloat16 on CUDA (what 7B models run in there), float32 elsewhere."""
    return "bfloat16" if device.type == "cuda" else DEFAULT_DTYPE
