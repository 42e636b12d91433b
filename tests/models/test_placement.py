"""Placements: one device or a device map, `--max-memory`, and dtype "auto", checked before loading."""

import pytest
import torch

from circuitlab.core.errors import ConfigError
from circuitlab.models import ModelConfig
from circuitlab.models.placement import placement
from circuitlab.models.placement import parse_device_map, parse_max_memory


def test_one_device_and_the_auto_dtype():
    where = placement(None, "auto")
    assert where.device == "cpu" and where.dtype == "float32" and not where.dispatched
    assert placement("cpu", "bfloat16").dtype == "bfloat16"
    assert ModelConfig(model="tiny-llama").dtype_name == "float32"


def test_device_maps_and_memory_budgets():
    assert parse_device_map("balanced") == "balanced"
    assert parse_device_map('{"model.layers.0": "cpu", "lm_head": "disk"}') == {"model.layers.0": "cpu",
                                                                                 "lm_head": "disk"}
    assert parse_max_memory("cpu=60GiB, disk=1TB") == {"cpu": "60GiB", "disk": "1TB"}
    where = placement(None, "auto", "sequential", "cpu=2GiB")
    assert where.dispatched and where.device is None and where.max_memory == {"cpu": "2GiB"}


@pytest.mark.parametrize("args, field", [
    ((None, "auto", "everywhere"), "device_map"),
    ((None, "auto", "[1, 2]"), "device_map"),
    ((None, "auto", "auto", "cpu:60GiB"), "max_memory"),
    ((None, "auto", "auto", "cpu=lots"), "max_memory"),
    ((None, "auto", None, "cpu=1GiB"), "max_memory"),
    (("cuda:0", "auto", "auto"), "device"),
])
def test_bad_placements_name_their_option(args, field):
    with pytest.raises(ConfigError) as e:
        placement(*args)
    assert e.value.field == field


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_map_naming_a_gpu_this_machine_lacks():
    with pytest.raises(ConfigError, match="names 'cuda:3': cuda:3: this machine has no cuda device"):
        parse_device_map('{"model.layers.0": "cuda:3"}')
    with pytest.raises(ConfigError, match="names 0"):
        parse_max_memory("0=20GiB")
