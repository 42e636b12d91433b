"""A model as a plain Hugging Face directory (safetensors, tokenizer, config) that any tool loads with
`AutoModelForCausalLM.from_pretrained(DIR)`: the embedded GGUF model and the tiny test models included.

The model is loaded without a TransformerBridge (a bridged model's modules are wrapped and its weights tied
through the wrappers, so `save_pretrained` cannot write it) and written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable, output_lock, write_dir_atomic
from circuitlab.models.dims import model_dims
from circuitlab.models.plain import load_plain


def export_model(name: str, out: str | Path) -> Path:
    """`name` (an alias, hub id or local directory) as a plain HF directory at `out`, which must not exist yet."""
    out = Path(out)
    if out.exists():
        raise CircuitlabError(f"--out {out} already exists; export-model writes a new directory")
    check_writable(out, "dir")
    model_dims(name)  # the model exists (or the hub answers) before anything loads
    with output_lock(out):  # one writer of `out`; what a killed export left beside it is removed first
        if out.exists():  # written by the process this one waited for
            raise CircuitlabError(f"--out {out} already exists; export-model writes a new directory")
        plain = load_plain(name, "cpu", "float32")
        return write_dir_atomic(out, lambda tmp: save_model(plain.hf_model, plain.tokenizer, tmp))


def save_model(hf_model, tokenizer, directory: str | Path) -> None:
    """`save_pretrained` of both, written so that transformers 4 (and the tools on it: TransformerLens 2,
    the EAP-IG library) reads what transformers 5 means. Two things it would get wrong, silently or not:
    - RoPE: transformers 5 writes `rope_parameters` only; transformers 4 reads `rope_theta` and, finding none,
      runs 10,000 (SmolLM2's is 100,000: same shapes, other logits). The legacy keys are written too.
    - the tokenizer's class, `TokenizersBackend`, which transformers 4 cannot load; both load
      `PreTrainedTokenizerFast` from tokenizer.json."""
    tokenizer.save_pretrained(directory)
    hf_model.save_pretrained(directory)
    _update_json(Path(directory) / "tokenizer_config.json", lambda c: {
        **c, "tokenizer_class": "PreTrainedTokenizerFast"} if c.get("tokenizer_class") == "TokenizersBackend" else c)
    _update_json(Path(directory) / "config.json", _legacy_rope)


def _legacy_rope(config: dict) -> dict:
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" not in rope or "rope_theta" in config:
        return config
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    legacy = {"rope_theta": rope["rope_theta"]}
    if scaling.get("rope_type", "default") != "default":
        legacy["rope_scaling"] = scaling
    return {**config, **legacy}


def _update_json(path: Path, change) -> None:
    config = json.loads(path.read_text())
    new = change(config)
    if new != config:
        path.write_text(json.dumps(new, indent=2, ensure_ascii=False) + "\n")
