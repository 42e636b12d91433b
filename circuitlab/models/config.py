"""ModelConfig: which model, where and in what precision; the options every command that loads one shares."""

from __future__ import annotations

from dataclasses import dataclass

from circuitlab.models.device import DEFAULT_DEVICE, DTYPES
from circuitlab.models.names import EMBEDDED
from circuitlab.models.placement import DEVICE_MAPS, Placement, placement
from circuitlab.settings import check_settings, setting


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

    def __post_init__(self) -> None:
        check_settings(self)
        self.where: Placement = placement(self.device, self.dtype, self.device_map, self.max_memory)

    def load(self):
        """The model as a `LoadedModel`, placed as this config says."""
        from circuitlab.models.loaded import load_model

        return load_model(self.model, self.device, self.dtype, device_map=self.device_map, max_memory=self.max_memory)

    @property
    def dtype_name(self) -> str:
        """The precision actually used (`auto` resolved), as recorded in results."""
        return str(self.where.dtype).removeprefix("torch.")
