"""Where a model's weights go: one device, or dispatched over several by a device map, and in what
precision. Everything is checked against this machine before anything is loaded.

A device map is one of accelerate's strategies (`auto`, `balanced`, `balanced_low_0`, `sequential`,
bounded by `--max-memory`) or an explicit JSON object of module name -> device (an int is a CUDA
index; `cpu`, `disk` and `cuda:N` are also allowed). The model is then loaded dispatched, as
`from_pretrained(device_map=...)` does, and wrapped in the bridge as it is: each block runs on its
device and hidden states move with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from circuitlab.core.errors import ConfigError
from circuitlab.models.device import check_device, check_dtype, cuda_available, default_dtype

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Placement:
    device: str | None  # one device, or None when dispatched
    device_map: str | dict | None
    max_memory: dict | None
    dtype: str  # "float32", "float16" or "bfloat16"

    @property
    def dispatched(self) -> bool:
        return self.device_map is not None


def placement(device: str | None, dtype: str | None, device_map: str | None = None,
              max_memory: str | None = None) -> Placement:
    """Check the four options together and resolve `dtype` "auto" (bfloat16 on CUDA, else float32)."""
    if device_map is None and max_memory is not None:
        raise ConfigError("max_memory", "bounds a device map; give --device-map auto|balanced|sequential too")
    if device_map is None:
        dev = check_device(device or "cpu")
        return Placement(dev, None, None, check_dtype(default_dtype(dev) if dtype in (None, "auto") else dtype))
    if device not in (None, "cpu"):
        raise ConfigError("device", "and --device-map both place the model; give one of them")
    dmap = parse_device_map(device_map)
    memory = parse_max_memory(max_memory) if max_memory is not None else None
    targets = set(memory or {}) | (set(dmap.values()) if isinstance(dmap, dict) else set())
    on_cuda = any(isinstance(t, int) or str(t).startswith("cuda") for t in targets) or (
        isinstance(dmap, str) and cuda_available())
    resolved = check_dtype(("bfloat16" if on_cuda else "float32") if dtype in (None, "auto") else dtype)
    return Placement(None, dmap, memory, resolved)


def parse_device_map(text: str) -> str | dict:
    if text in DEVICE_MAPS:
        return text
    try:
        dmap = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError("device_map", f"must be one of {', '.join(DEVICE_MAPS)} or a JSON object of module "
                                        f"-> device; got {text!r}") from None
    if not isinstance(dmap, dict) or not dmap:
        raise ConfigError("device_map", "as JSON must be an object of module name -> device")
    return {str(k): _target(v, "device_map") for k, v in dmap.items()}


def parse_max_memory(text: str) -> dict:
    """"0=20GiB,1=20GiB,cpu=60GiB" -> {0: "20GiB", 1: "20GiB", "cpu": "60GiB"} (accelerate's form)."""
    memory = {}
    for part in text.split(","):
        key, sep, size = part.partition("=")
        if not sep or not SIZE.match(size):
            raise ConfigError("max_memory", f"must be DEVICE=SIZE,... like 0=20GiB,cpu=60GiB; got {text!r}")
        memory[_target(key.strip(), "max_memory")] = size.strip()
    return memory


def _target(value, field: str):
    """A device map target: an int (CUDA index), "cpu", "disk", "mps" or "cuda:N", that this machine has."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if value == "disk":
        return value
    name = f"cuda:{value}" if isinstance(value, int) else str(value)
    try:
        check_device(name)
    except ConfigError as e:
        raise ConfigError(field, f"names {value!r}: {e.problem}") from None
    return value


def blocks_on_disk(named_parameters) -> list[str]:
    """The blocks ("model.layers.3", or the parameter's module) whose parameters accelerate's disk offload keeps
    on the meta device between forwards: they exist only while their own module runs. Code that reads such
    a weight from outside (TransformerLens's per-head projections) or trains it cannot run there."""
    blocks = set()
    for name, p in named_parameters:
        if p.device.type == "meta":
            m = re.search(r"((?:model\.)?layers\.\d+)\.", name)  # PEFT's prefix dropped
            bare = name.replace("._original_component", "")  # the bridge's wrapping
            blocks.add(m.group(1) if m else bare.rpartition(".")[0])
    return sorted(blocks, key=lambda b: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", b)])


def maps_to_disk(where: Placement) -> list[str]:
    """The modules an explicit JSON device map sends to "disk" (a strategy's are known only once it is computed)."""
    return [name for name, target in (where.device_map or {}).items() if target == "disk"] \
        if isinstance(where.device_map, dict) else []
