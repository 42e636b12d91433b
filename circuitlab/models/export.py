"""A model as a plain Hugging Face directory (safetensors, tokenizer, config) that any tool loads with
`AutoModelForCausalLM.from_pretrained(DIR)`: the embedded GGUF model and the tiny test models included.

The model is loaded without a TransformerBridge (a bridged model's modules are wrapped and its weights tied
through the wrappers, so `save_pretrained` cannot write it) and written whole or not at all."""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable, write_dir_atomic
from circuitlab.models.dims import model_dims
from circuitlab.models.plain import load_plain


def export_model(name: str, out: str | Path) -> Path:
    """`name` (an alias, hub id or local directory) as a plain HF directory at `out`, which must not exist yet."""
    out = Path(out)
    if out.exists():
        raise CircuitlabError(f"--out {out} already exists; export-model writes a new directory")
    check_writable(out, "dir")
    model_dims(name)  # the model exists (or the hub answers) before anything loads
    plain = load_plain(name, "cpu", "float32")
    return write_dir_atomic(out, lambda tmp: [obj.save_pretrained(tmp) for obj in (plain.tokenizer, plain.hf_model)])
