"""Devices and dtypes are checked before anything loads."""

import pytest
import torch

from circuitlab.core.errors import ConfigError
from circuitlab.models import check_device
from circuitlab.models.sources import torch_dtype
from circuitlab.models.config import ModelConfig


def test_cpu_and_known_dtypes():
    assert check_device("cpu") == "cpu"
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype(torch.float16) is torch.float16
    with pytest.raises(ConfigError, match="dtype must be one of"):
        torch_dtype("fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps"])
def test_devices_this_machine_lacks(device):
    with pytest.raises(ConfigError, match="this machine has no") as e:
        ModelConfig(device=device)
    assert e.value.field == "device"


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "meta"])
def test_devices_that_do_not_exist(device):
    with pytest.raises(ConfigError) as e:
        check_device(device)
    assert e.value.field == "device" and "\n" not in str(e.value)
