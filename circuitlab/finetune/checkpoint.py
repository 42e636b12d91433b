"""Training checkpoints: trainable tensors and optimizer state as safetensors, the rest as JSON.

`state.json` is written last: it names the step whose tensor files are complete, so a crash while
saving leaves the previous checkpoint usable. No pickle anywhere.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save

from circuitlab.errors import CircuitlabError
from circuitlab.io import read_json_object, write_bytes_atomic, write_json_atomic


def save_checkpoint(directory: Path, step: int, named: dict, optimizer, scheduler, progress: dict) -> None:
    tag = f"step-{step:07d}"
    write_bytes_atomic(directory / f"{tag}.trainable.safetensors",
                       save({k: p.detach().cpu().contiguous() for k, p in named.items()}))
    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items()}
    write_bytes_atomic(directory / f"{tag}.optimizer.safetensors", save(tensors))
    state = {"tag": tag, "param_groups": opt["param_groups"], "scheduler": scheduler.state_dict(), **progress}
    write_json_atomic(directory / "state.json", state)  # the commit point: older files go after it
    for old in directory.glob("step-*.safetensors"):
        if not old.name.startswith(tag):
            old.unlink()


def load_checkpoint(directory: Path, named: dict, optimizer, scheduler) -> dict | None:
    import torch

    if not (directory / "state.json").is_file():
        return None
    state = read_json_object(directory / "state.json", "checkpoint state")
    tag = state["tag"]
    trainable = load_file(str(directory / f"{tag}.trainable.safetensors"))
    if set(trainable) != set(named):
        raise CircuitlabError(f"checkpoint {directory} holds other parameters than this run trains")
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(trainable[k])
    flat = load_file(str(directory / f"{tag}.optimizer.safetensors"))
    opt_state: dict[int, dict] = {}
    for key, v in flat.items():
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    return state
