"""ModelConfig: which model, where and in what precision, and in how many processes; the options every command
that loads one shares. Checked when made, without importing torch.

Under `torchrun --nproc-per-node N -m circuitlab locate ...` (or `accelerate launch`) every process joins the
process group before the model loads (`start`); `cuda` means each process's own GPU (cuda:LOCAL_RANK), and a
`device_map` strategy spreads each process's copy over its own group of GPUs (the node's GPUs divided evenly).
`processes` says how many processes the command expects, so that starting it otherwise is one clear line
instead of a silent single-process run. (It is not `--nproc`: torchrun would take that for an abbreviation of
its own `--nproc-per-node`.)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.processes import Shard, launched_world, start
from circuitlab.core.settings import check_settings, setting
from circuitlab.models.device import DEFAULT_DEVICE, DTYPES, cuda_available
from circuitlab.models.names import EMBEDDED
from circuitlab.models.placement import DEVICE_MAPS, Placement, placement


@dataclass
class ModelConfig:
    model: str = setting(EMBEDDED, "alias, hub id or local directory")
    device: str | None = setting(None, f"torch device: {DEFAULT_DEVICE} (default), cuda, cuda:N, mps; under torchrun, "
                                       "cuda is each process's own GPU")
    dtype: str = setting("auto", "precision of the weights (auto: bfloat16 on CUDA, float32 elsewhere)",
                         choices=("auto", *DTYPES))
    device_map: str | None = setting(None, f"dispatch the model over several devices: {'|'.join(DEVICE_MAPS)} or a "
                                           "JSON object of module -> device (accelerate's semantics)",
                                     metavar="MAP")
    max_memory: str | None = setting(None, "with --device-map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=60GiB",
                                     metavar="DEV=SIZE,...")
    processes: int | None = setting(None, "the number of processes torchrun (or accelerate launch) started for this "
                                          "command; the command refuses to run otherwise", minimum=1, metavar="N")

    def __post_init__(self) -> None:
        check_settings(self)
        self.where: Placement = placement(self.device, self.dtype, self.device_map, self.max_memory)

    @property
    def dtype_name(self) -> str:
        """The precision actually used (`auto` resolved), as recorded in results."""
        return self.where.dtype

    def start(self, command: str = "this command") -> tuple[Shard, "ModelConfig"]:
        """Check `processes` against how this process was started, join the process group torchrun set up, and
        give this process its part of the machine: (its Shard, the config it loads its model with)."""
        world = launched_world()
        if self.processes is not None and self.processes != world:
            how = f"torchrun started {world} processes" if world > 1 else "it was not started by torchrun"
            raise CircuitlabError(f"--processes {self.processes}: {how}; run `torchrun --nproc-per-node "
                                  f"{self.processes} -m circuitlab {command} ...`")
        on_cuda = (self.device or "").startswith("cuda") or (self.device_map is not None and cuda_available())
        shard = start("cuda" if on_cuda else "cpu")
        if shard.world == 1:
            return shard, self
        if self.device == "cuda":
            return shard, dataclasses.replace(self, device=f"cuda:{shard.local_rank}")
        if self.device_map in DEVICE_MAPS and cuda_available():
            import torch  # a GPU machine: each process's copy over its own GPUs

            per = max(1, torch.cuda.device_count() // int(os.environ.get("LOCAL_WORLD_SIZE", shard.world)))
            gpus = range(shard.local_rank * per, (shard.local_rank + 1) * per)
            memory = ",".join(f"{g}={torch.cuda.mem_get_info(g)[1]}B" for g in gpus)
            return shard, dataclasses.replace(self, max_memory=memory)
        return shard, self
