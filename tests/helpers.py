"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import math
import socket

import torch

from circuitlab.circuits.circuit import Sample

# Different lengths (padding inside a batch) and multi-token targets.
SAMPLES = [
    Sample("Question: What is the capital of France?\nAnswer:", " Paris", 0),
    Sample("The sky is", " blue", 1),
    Sample("One, two, three, four, five, six, seven, eight, nine,", " ten eleven", 2),
    Sample("Cats and dogs are", " animals that people keep", 3),
    Sample("2 + 2 =", " 4", None),
]

# Token ids for forward passes of the tiny models.
IDS = torch.tensor([[5, 17, 230, 9, 41, 7, 300], [11, 2, 99, 123, 6, 8, 1000]])


def close(a, b, rel=1e-5) -> bool:
    """Equal lengths, each pair within `rel` (NaN only where both are NaN)."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or abs(x - y) <= rel * abs(x)
                                    for x, y in zip(a, b))


def randomize(module: torch.nn.Module, seed: int = 7, scale: float = 0.3) -> torch.nn.Module:
    """Every parameter drawn at random (an adapter whose Up is not zero changes the output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from circuitlab.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, argv, match: str) -> str:
    """Run the CLI, expect exit code 2 and exactly one line on stderr containing `match`."""
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("circuitlab: error:"), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def partial_steps(out) -> dict:
    """The finished steps an interrupted `locate_to(out)` left in its partial state."""
    import json
    from pathlib import Path

    return json.loads((Path(f"{out}.partial") / "state.json").read_text())["state"]["done"]


def free_port() -> int:
    """A TCP port nobody listens on, for a process group of the tests' own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# what a run records of its own work (durations, steps replayed, FLOPs done here): differs run to run
DURATIONS = {"seconds", "locate_s", "elapsed_s", "timings", "train_runtime", "resumed_steps", "engine_flops"}


def without_durations(obj):
    """A JSON result without what differs from run to run of the same job (`DURATIONS`), at any depth."""
    if isinstance(obj, dict):
        return {k: without_durations(v) for k, v in obj.items() if k not in DURATIONS}
    if isinstance(obj, list):
        return [without_durations(v) for v in obj]
    return obj


def crash_hook(k: int, seen: list):
    """A `circuitlab.core.io.fault_hook` that records each write boundary in `seen` and crashes at the k-th."""
    from circuitlab.core import io

    def hook(name):
        seen.append(name)
        if len(seen) == k:
            raise io.Crash(name)

    return hook
