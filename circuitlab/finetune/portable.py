"""Any run's adapter taken out of circuitlab: `merge_run` folds it into the model's weights, `export_run` writes it
where stock tools load it, for every method the methods table calls mergeable.

A HeadMap adapter (`headmap-*`, with or without LoRA/DoRA layers) goes through `headmap.conversion`, which folds the
MHA map into o_proj and can write it as a LoRA. The LoRA family (`lora`, `dora`, `circuit-lora`) trains PEFT's own
LoRA layers, so its adapter is a stock PEFT adapter already: `merge_run` loads it onto its base model and calls
PEFT's `merge_and_unload` (W + B·A·alpha/r, DoRA's magnitude included), and `export_run` copies its files.
"""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import copy_atomic, read_json_object, write_dir_atomic
from circuitlab.headmap.dirs import PEFT_CONFIG, AdapterDir, is_adapter_dir
from circuitlab.models.dims import model_dims, stored_dtype

COPIED = (PEFT_CONFIG, "adapter_model.safetensors", "adapter_model.bin", "README.md")


def read_adapter(source: str | Path, command: str) -> AdapterDir:
    """The adapter of `source`, read once: a HeadMap one or a PEFT LoRA (or DoRA); one line for a run without an
    adapter or an adapter of another kind."""
    source = Path(source)
    if not (is_adapter_dir(source) or is_adapter_dir(source / "adapter")) and (source / "result.json").is_file():
        method = read_json_object(source / "result.json", "run result").get("method")
        raise CircuitlabError(f"run {source} (method {method}) has no adapter to {command}: it trained nothing")
    adapter = AdapterDir.read(source)
    if adapter.peft_type not in ("HEADMAP", "LORA"):
        raise CircuitlabError(f"{adapter.path} holds a {adapter.peft_type} adapter, not a HeadMap one nor a LoRA/DoRA, "
                              f"which are what {command} takes")
    return adapter


def base_name(adapter: AdapterDir, model_name: str | None) -> str:
    """The model a stock PEFT adapter is merged into: `model_name`, else its run's model, else the base it names."""
    recorded = (adapter.run_model or {}).get("name")
    name = model_name or recorded or adapter.config.get("base_model_name_or_path")
    if not name:
        raise CircuitlabError(f"{adapter.path} names no base model: give --model")
    return name


def merge_run(source: str | Path, out: str | Path, model_name: str | None = None) -> Path:
    """A stock HF model (and tokenizer) in the new directory `out`: the base model with the adapter of `source`
    (a run directory or an adapter directory) merged into its weights."""
    from circuitlab.headmap.conversion import merge, new_dir

    adapter = read_adapter(source, "merge")
    if adapter.is_headmap:
        return merge(adapter, out, model_name=model_name)
    out = new_dir(out, "merge")
    name = base_name(adapter, model_name)
    adapter.check_fits(model_dims(name), name)  # before the weights load
    from circuitlab.headmap.adapter import check_peft_type, load_any
    from circuitlab.models.export import save_model
    from circuitlab.models.plain import load_plain

    check_peft_type(adapter)
    plain = load_plain(name, dtype=stored_dtype(name))
    peft_model = load_any(plain.hf_model, adapter)  # its base model checked first, where its run records it
    merged = peft_model.merge_and_unload()
    return write_dir_atomic(out, lambda tmp: save_model(merged, plain.tokenizer, tmp))


def export_run(source: str | Path, out: str | Path, lora: bool = False, model_name: str | None = None) -> list[Path]:
    """The adapter of `source` where stock tools load it, in the new directory `out` (with the run's circuit JSON
    where there is one); `lora`: also a stock PEFT LoRA in `out/lora` (a LoRA-family adapter is one already)."""
    from circuitlab.headmap.conversion import export, new_dir

    adapter = read_adapter(source, "export")
    if adapter.is_headmap:
        return export(adapter, out, lora=lora, model_name=model_name)
    out, directory = new_dir(out, "export"), adapter.path

    def fill(tmp: Path) -> None:
        for target in (tmp, tmp / "lora") if lora else (tmp,):
            for name in COPIED:
                if (directory / name).is_file():
                    copy_atomic(directory / name, target / name)
        if (directory.parent / "circuit.json").is_file():
            copy_atomic(directory.parent / "circuit.json", tmp / "circuit.json")

    write_dir_atomic(out, fill)
    return sorted(p for p in Path(out).rglob("*") if p.is_file())
