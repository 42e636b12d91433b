"""HeadMap on a plain Hugging Face model: `attach(model, DIR)` / `detach(model)`, no TransformerLens.

An adapter directory (written by `circuitlab export`, or by `circuitlab finetune` under runs/NAME/adapter)
holds `headmap_config.json` (variant, heads, rank, scaling and the base model it was trained on) and
`adapter.safetensors` (Down/Up of every layer). `attach` checks the base model, puts each layer's
adapter on the device and dtype of that layer's o_proj weight (so a model dispatched over several
GPUs with `device_map="auto"` works), and registers torch module hooks that call the same
HeadMapLayer as the bridge wiring.

The base-model check compares a probe of the weights: a few values sampled at fixed positions of
every projection, norm and embedding matrix. Unlike a hash it survives a dtype cast: values must
agree to within the rounding of the model's dtype (exactly, in practice, for fp32).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from circuitlab.errors import CircuitlabError
from circuitlab.headmap import HeadMapConfig, HeadMapModel, Shape, decoder_layers
from circuitlab.io import read_json, write_json_atomic

CONFIG_FILE = "headmap_config.json"
WEIGHTS_FILE = "adapter.safetensors"
FORMAT = "circuitlab-headmap"
FORMAT_VERSION = 1
PROBE_PATHS = (
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
PROBE_VALUES = 8

_ATTR = "_circuitlab_headmap"  # where an attached adapter hangs on the model (not a registered submodule)


# -- the base model's identity ---------------------------------------------------------------------


def _weight(model, path: str):
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return getattr(obj, "weight", None)


def weight_probe(hf_model, n: int = PROBE_VALUES) -> dict[str, list[float]]:
    """`n` values at evenly spaced positions of each key weight matrix, as float32 numbers.

    Reads weights through attribute paths, so it gives the same probe for a plain HF model, the same
    model patched by a TransformerBridge, or one with PEFT layers injected (whose `.weight` is the base's).
    Weights offloaded to the meta device are left out.
    """
    tensors = {"embed_tokens": hf_model.get_input_embeddings().weight}
    for i, block in enumerate(decoder_layers(hf_model)):
        for path in PROBE_PATHS:
            w = _weight(block, path)
            if w is not None:
                tensors[f"layers.{i}.{path}"] = w
    probe = {}
    for name, w in tensors.items():
        if w.device.type == "meta":
            continue
        flat = w.detach().reshape(-1)
        idx = (torch.arange(n) * (flat.numel() - 1)) // max(n - 1, 1)  # exact integer positions, ends included
        probe[name] = flat[idx.to(flat.device)].to("cpu", torch.float32).tolist()
    return probe


def base_info(hf_model, name: str | None = None, hf_id: str | None = None, fingerprint: str | None = None) -> dict:
    """What an adapter records about the model it was trained on."""
    shape = Shape.of_config(hf_model.config)
    return {
        "name": name,
        "hf_id": hf_id or getattr(hf_model.config, "_name_or_path", None),
        "fingerprint": fingerprint,  # circuitlab.models.weight_fingerprint of the training model, informative
        "n_layers": shape.n_layers,
        "n_heads": shape.n_heads,
        "n_kv_heads": getattr(hf_model.config, "num_key_value_heads", None) or shape.n_heads,
        "d_head": shape.d_head,
        "d_model": shape.d_model,
        "probe": weight_probe(hf_model),
    }


def check_base(base: dict, hf_model, what: str = "adapter") -> None:
    """Refuse a model whose dimensions or weights differ from the one `base` describes."""
    have = base_info(hf_model)
    dims = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")
    if any(base.get(k) != have[k] for k in dims):
        fmt = lambda d: ", ".join(f"{k}={d.get(k)}" for k in dims)  # noqa: E731
        raise CircuitlabError(
            f"{what} was trained on {base.get('name') or base.get('hf_id')} ({fmt(base)}), "
            f"but this model has {fmt(have)}"
        )
    dtype = hf_model.get_input_embeddings().weight.dtype
    # Casting an fp32 weight to `dtype` moves it by at most half an ulp; allow one ulp, plus a
    # tiny absolute slack for subnormals.
    rtol, tiny = (torch.finfo(dtype).eps, torch.finfo(dtype).tiny) if dtype.is_floating_point else (0.0, 0.0)
    wanted = base.get("probe") or {}
    common = sorted(set(wanted) & set(have["probe"]))
    if not common:
        raise CircuitlabError(f"{what}: no weights of this model could be compared with the base model's probe")
    for key in common:
        a = torch.tensor(wanted[key], dtype=torch.float64)
        b = torch.tensor(have["probe"][key], dtype=torch.float64)
        if a.shape != b.shape or not torch.all((a - b).abs() <= rtol * a.abs() + tiny):
            raise CircuitlabError(
                f"{what} was trained on {base.get('name') or base.get('hf_id')} with weight fingerprint "
                f"{base.get('fingerprint')}, but this model's weights differ (first at {key}); "
                "attach it to the same base model"
            )


# -- adapter files ---------------------------------------------------------------------------------


def save_adapter(hm: HeadMapModel, directory: str | Path, base: dict, extra: dict | None = None) -> Path:
    """Write `headmap_config.json` and `adapter.safetensors` (fp32, on CPU) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in hm.state_dict().items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    tmp.replace(directory / WEIGHTS_FILE)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **hm.config.to_dict(), "base_model": base}
    config.update(extra or {})
    write_json_atomic(directory / CONFIG_FILE, config)
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise CircuitlabError(f"adapter directory not found: {directory}")
    config = read_json(directory / CONFIG_FILE, "HeadMap adapter config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CircuitlabError(f"{directory / CONFIG_FILE} is not a circuitlab HeadMap adapter config")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CircuitlabError(f"{directory} has adapter format version {config['format_version']}; upgrade circuitlab")
    return config


def load_adapter(directory: str | Path) -> tuple[HeadMapModel, dict]:
    """The adapter (on CPU, fp32) and its config dict, from safetensors and JSON only."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    base = config.get("base_model") or {}
    try:
        shape = Shape(base["n_layers"], base["n_heads"], base["d_head"], base["d_model"])
    except KeyError as e:
        raise CircuitlabError(f"{directory / CONFIG_FILE}: base_model lacks {e.args[0]!r}") from None
    hm = HeadMapModel(HeadMapConfig.from_dict(config), shape)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CircuitlabError(f"adapter weights not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CircuitlabError(f"cannot read adapter weights {path}: {e}") from None
    try:
        hm.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CircuitlabError(f"adapter weights {path} do not match its config: {first}") from None
    return hm, config


# -- attach / detach -------------------------------------------------------------------------------


def attached(model) -> HeadMapModel | None:
    return model.__dict__.get(_ATTR)


def attach(model, adapter: str | Path | HeadMapModel, check: bool = True, base: dict | None = None) -> HeadMapModel:
    """Attach a HeadMap adapter (directory or HeadMapModel) to a plain `AutoModelForCausalLM`.

    Each layer's adapter goes to the device and dtype of that layer's o_proj weight. With `check`,
    a model other than the adapter's base model (dimensions or weights) is refused.
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
    elif Shape.of_config(model.config) != hm.shape:
        raise CircuitlabError(f"adapter shape {hm.shape} does not fit this model ({Shape.of_config(model.config)})")
    layers = decoder_layers(model)
    for layer, m in hm.layers.items():
        w = _weight(layers[int(layer)], "self_attn.o_proj")
        m.to(device=w.device if w.device.type != "meta" else "cpu")
        if w.dtype.is_floating_point:
            m.to(dtype=w.dtype)
    hm.attach_hf(model)
    model.__dict__[_ATTR] = hm  # plain attribute: the model's state dict and save_pretrained stay untouched
    return hm


def detach(model) -> HeadMapModel | None:
    """Remove an attached adapter; the model computes exactly what it did before `attach`."""
    hm = model.__dict__.pop(_ATTR, None)
    if hm is not None:
        hm.detach_hf()
    return hm
