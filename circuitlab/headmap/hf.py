"""HeadMap on a plain Hugging Face model: `attach(model, DIR)` / `detach(model)`, no TransformerLens.

`attach` checks the base model (dimensions and weights), puts each layer's adapter on the device and
dtype of that layer's o_proj weight (so a model dispatched over several GPUs with
`device_map="auto"` works), and wraps o_proj (and down_proj for "hs") in HeadMap's PEFT layers
(`HeadMapModel.attach_hf`), which hold the adapter's own maps; `detach` puts the modules back.
"""

from __future__ import annotations

from pathlib import Path

from circuitlab.errors import CircuitlabError
from circuitlab.headmap.files import check_base, load_adapter
from circuitlab.headmap.model import HeadMapModel
from circuitlab.models.identity import ModelDims
from circuitlab.models.llama import decoder_layers

_ATTR = "_circuitlab_headmap"  # where an attached adapter hangs on the model (not a registered submodule)


def attached(model) -> HeadMapModel | None:
    return model.__dict__.get(_ATTR)


def attach(model, adapter: str | Path | HeadMapModel, check: bool = True, base: dict | None = None) -> HeadMapModel:
    """Attach a HeadMap adapter (directory or HeadMapModel) to a plain `AutoModelForCausalLM`.

    With `check`, a model other than the adapter's base model (dimensions or weights) is refused.
    """
    if attached(model) is not None:
        raise CircuitlabError("a HeadMap adapter is already attached to this model; detach(model) first")
    if isinstance(adapter, HeadMapModel):
        hm = adapter
    else:
        hm, config = load_adapter(adapter)
        base = config["base_model"]
        if "+" in str(config.get("method", "")):
            raise CircuitlabError(f"{adapter} comes from a combination run ({config['method']}): its LoRA/DoRA "
                                  "part lives in the training model, not in this HeadMap adapter")
    if check and base is not None:
        check_base(base, model)
    elif ModelDims.of_config(model.config) != hm.dims:
        have = ModelDims.of_config(model.config)
        raise CircuitlabError(f"adapter made for {hm.dims} does not fit this model ({have})")
    layers = decoder_layers(model)
    for layer, m in hm.layers.items():
        w = layers[int(layer)].self_attn.o_proj.weight
        m.to(device=w.device if w.device.type != "meta" else "cpu")
        if w.dtype.is_floating_point:
            m.to(dtype=w.dtype)
    hm.attach_hf(model)
    model.__dict__[_ATTR] = hm  # plain attribute, not a submodule
    return hm


def detach(model) -> HeadMapModel | None:
    """Remove an attached adapter; the model computes exactly what it did before `attach`."""
    hm = model.__dict__.pop(_ATTR, None)
    if hm is not None:
        hm.detach_hf()
    return hm
