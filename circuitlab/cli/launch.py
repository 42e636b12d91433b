"""Commands run by torchrun (or `accelerate launch`) as several processes: checks, and each process's model.

Under `torchrun --nproc-per-node N -m circuitlab locate ...` every process joins the process group
before the model loads; `--device cuda` means each process's own GPU (cuda:LOCAL_RANK), and a
`--device-map` strategy spreads each process's copy over its own group of GPUs (all GPUs split evenly
between the processes of a node). `--processes N` says how many processes the command expects, so that
starting it otherwise is one clear line instead of a silent single-process run. (It is not called
`--nproc`: torchrun would take that for an abbreviation of its own `--nproc-per-node`.)
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from circuitlab.errors import CircuitlabError
from circuitlab.locate.distributed import Shard, start
from circuitlab.processes import launched_world


def add_process_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--processes", type=int, metavar="N",
                   help="the number of processes torchrun (or accelerate launch) started for this command; "
                        "the command refuses to run otherwise")


def refuse_several(command: str) -> None:
    """For the commands that run in one process."""
    if launched_world() > 1:
        raise CircuitlabError(f"circuitlab {command} runs in one process; start it without torchrun "
                              "(locate and reproduce share their work between processes)")


def processes(args, where) -> tuple[Shard, object]:
    """Check `--processes` against how the command was started, join the process group, and give this
    process its part of the machine: (its Shard, its ModelConfig)."""
    import torch

    world = launched_world()
    if args.processes is not None and args.processes != world:
        how = f"torchrun started {world} processes" if world > 1 else "it was not started by torchrun"
        raise CircuitlabError(f"--processes {args.processes}: {how}; run `torchrun --nproc-per-node "
                              f"{args.processes} -m circuitlab {args.command} ...`")
    on_cuda = (where.device or "").startswith("cuda") or (where.device_map is not None and torch.cuda.is_available())
    shard = start("cuda" if on_cuda else "cpu")
    if shard.world == 1:
        return shard, where
    if where.device == "cuda":
        where = dataclasses.replace(where, device=f"cuda:{shard.local_rank}")
    elif where.device_map in ("auto", "balanced", "balanced_low_0", "sequential") and torch.cuda.is_available():
        per = max(1, torch.cuda.device_count() // int(os.environ.get("LOCAL_WORLD_SIZE", shard.world)))
        gpus = range(shard.local_rank * per, (shard.local_rank + 1) * per)
        memory = {g: torch.cuda.mem_get_info(g)[1] for g in gpus}
        where = dataclasses.replace(where, max_memory=",".join(f"{g}={b}B" for g, b in memory.items()))
    return shard, where
