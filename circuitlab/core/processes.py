"""One process or several, one result: how this process was started, and what several processes share.

Under `torchrun --nproc-per-node N -m circuitlab ...` (or `accelerate launch`) every process (rank) runs the
same command. `launched_world` and `launched_main` read the launchers' environment (WORLD_SIZE, RANK), so
asking costs nothing and imports nothing. `Shard` is this process's place in the process group once joined
(`start`: NCCL on GPUs, gloo on CPUs): locating shares each layer's candidate x sample rows out (`share`,
balanced by tokens) and all-gathers the losses, so every rank makes the same choice; rank 0 alone writes
files and draws progress bars. Nothing here runs when only one process was started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar


def launched_world() -> int:
    """How many processes torchrun or `accelerate launch` started (1 without them)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def launched_main() -> bool:
    """Whether this is the process that writes and prints (rank 0, or the only one)."""
    return int(os.environ.get("RANK", 0)) == 0


T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes of one run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "Shard":
        """The initialised process group's ranks, or a single process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        return cls()

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def start(device_type: str) -> Shard:
    """Join the process group torchrun set up (NCCL for CUDA, gloo otherwise); a single process as is."""
    if launched_world() == 1:
        return Shard()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Shard.current()


def share(items: Sequence[T], cost: Callable[[T], float], shard: Shard) -> list[T]:
    """This rank's part of `items`: longest first, each to the rank with the least work so far (ties:
    the lowest rank), the same split on every rank; returned in the items' own order."""
    if shard.world == 1:
        return list(items)
    load = [0.0] * shard.world
    mine = set()
    for i in sorted(range(len(items)), key=lambda i: (-cost(items[i]), i)):
        rank = min(range(shard.world), key=lambda r: (load[r], r))
        load[rank] += cost(items[i])
        if rank == shard.rank:
            mine.add(i)
    return [items[i] for i in sorted(mine)]


def merged(parts: list[dict]) -> dict:
    """The ranks' {row: value} dicts as one."""
    out: dict = {}
    for part in parts:
        out.update(part)
    return out
