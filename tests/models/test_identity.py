"""One answer to "is this the same model?": dimensions, then weights (exact fingerprint, or a probe
that tolerates a dtype cast)."""

import pytest
import torch

from circuitlab.core.errors import CircuitlabError
from circuitlab.models import ModelDims, ModelIdentity, check_same_model, hf_identity, model_config, tiny_model


def test_dims_from_a_config_before_any_weights_load():
    assert ModelDims.of_config(model_config("tiny-llama-gqa")) == ModelDims(4, 8, 2, 8, 64)
    assert ModelDims.of_config(model_config("smollm2-135m")) == ModelDims(30, 9, 3, 64, 576)
    with pytest.raises(CircuitlabError, match=r"out of range: layer 4 heads \[0\]"):
        ModelDims(4, 8, 2, 8, 64).check_heads({4: [0]})
    with pytest.raises(CircuitlabError, match=r"layer 1 heads \[8\]"):
        ModelDims(4, 8, 2, 8, 64).check_heads({1: [3, 8]})


def test_dimensions_then_fingerprint_then_probe():
    plain, _ = tiny_model("tiny-llama")
    fp32 = hf_identity(plain, "tiny-llama")
    check_same_model(fp32, fp32, "adapter")
    bf16 = hf_identity(tiny_model("tiny-llama", torch.bfloat16)[0], "bf16 copy")
    check_same_model(fp32, bf16, "adapter")  # a cast moves weights within the rounding: same model
    with pytest.raises(CircuitlabError, match="was made on tiny-llama .*, not on other"):
        check_same_model(fp32, ModelIdentity("other", ModelDims(4, 8, 2, 8, 64)), "adapter")
    reseeded = hf_identity(tiny_model("tiny-llama", seed=1)[0], "reseeded")
    with pytest.raises(CircuitlabError, match="weights differ on reseeded"):
        check_same_model(fp32, reseeded, "adapter")
    no_probe = ModelIdentity("x", fp32.dims, fingerprint="0" * 16)
    with pytest.raises(CircuitlabError, match="have fingerprint 0000"):
        check_same_model(ModelIdentity("a", fp32.dims, fp32.fingerprint), no_probe, "circuit", made="located")
    check_same_model(fp32, ModelIdentity("dims only", fp32.dims), "circuit")  # nothing to compare weights by
