"""Devices and precisions, checked against this machine before anything is loaded, without importing torch
where the answer is known without it (a CPU-only build of torch has no CUDA device to ask about)."""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from circuitlab.core.errors import ConfigError

DTYPES = ("float32", "float16", "bfloat16")
DEFAULT_DTYPE = "float32"
DEFAULT_DEVICE = "cpu"
_DEVICE = re.compile(r"(cpu|cuda|mps|xpu|meta)(?::(\d+))?")


@lru_cache(maxsize=1)
def torch_has_cuda() -> bool:
    """Whether the installed torch was built with CUDA, read from its `version.py` without importing it."""
    spec = importlib.util.find_spec("torch")
    version = Path(spec.submodule_search_locations[0]) / "version.py" if spec and spec.submodule_search_locations \
        else None
    if version is None or not version.is_file():
        return True  # cannot tell: let torch answer
    found = re.search(r"^cuda\b[^=\n]*=\s*(\S+)", version.read_text(), re.MULTILINE)
    return found is None or found.group(1) != "None"


def cuda_available() -> bool:
    if not torch_has_cuda():
        return False
    import torch

    return torch.cuda.is_available()


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return dtype


def check_device(device: str) -> str:
    """A device this machine has: `cpu`, `cuda`/`cuda:N` with N below the GPU count, `mps`, ... (as given)."""
    found = _DEVICE.fullmatch(str(device))
    if found is None:
        raise ConfigError("device", f"is not a torch device: {device!r} (e.g. cpu, cuda, cuda:1, mps)")
    kind, index = found.group(1), found.group(2)
    if kind == "cpu":
        return str(device)
    if kind == "meta":
        raise ConfigError("device", "meta holds no weights; choose cpu or a GPU")
    if kind == "cuda" and not torch_has_cuda():
        raise ConfigError("device", f"{device}: this machine has no cuda device (torch was built without CUDA)")
    import torch  # a device only torch can count

    backend = torch.backends.mps if kind == "mps" else getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        raise ConfigError("device", f"{device}: this machine has no {kind} device (none found)")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if index is not None and int(index) >= count:
        raise ConfigError("device", f"{device}: this machine has {count} {kind} device(s), numbered from 0")
    return str(device)


def default_dtype(device: str) -> str:
    """bfloat16 on CUDA (what 7B models run in there), float32 elsewhere."""
    return "bfloat16" if str(device).startswith("cuda") else DEFAULT_DTYPE
