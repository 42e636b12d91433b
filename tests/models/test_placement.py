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


def test_weights_offloaded_to_disk_are_removed_when_the_process_ends(tmp_path):
    """accelerate copies offloaded weights that are not in a safetensors checkpoint into the offload folder: at
    7B that is GBs per run, which used to stay in /tmp after every run."""
    import os
    import subprocess
    import sys

    code = ("from circuitlab.models import load_model\n"
            "m = load_model('tiny-llama', device=None, device_map='sequential', max_memory='cpu=13MB')\n"
            "import pathlib, tempfile; print(sum(1 for _ in pathlib.Path(tempfile.gettempdir()).rglob('*.dat')))\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert int(out.split()[-1]) > 0  # the tiny model went to disk, so the folder did hold weights
    assert not list(tmp_path.glob("circuitlab-offload-*"))


def test_two_models_offloaded_in_one_process_keep_their_own_weights():
    """accelerate reuses an offload folder that holds an index: one folder per process gave the second model
    dispatched the first one's weights (or a shape error)."""
    from circuitlab.models import load_model

    first = load_model("tiny-llama", device=None, device_map="sequential", max_memory="cpu=13MB")
    second = load_model("tiny-llama-gqa", device=None, device_map="sequential", max_memory="cpu=13MB")
    assert "disk" in set(first.hf_model.hf_device_map.values()) & set(second.hf_model.hf_device_map.values())
    assert second.fingerprint() == load_model("tiny-llama-gqa").fingerprint()
    assert first.fingerprint() == load_model("tiny-llama").fingerprint()
