"""The README an adapter directory carries: what the adapter is and how each tool loads it, with or without
circuitlab (`export` writes it beside the files, and so does `finetune` in a run's `adapter/`)."""

from __future__ import annotations


def _base(base_id: str | None) -> str:
    return base_id or "BASE"


def headmap_card(config, base_id: str | None) -> str:
    heads = ", ".join(f"{layer}: {hs}" for layer, hs in sorted(config.heads.items()))
    base = _base(base_id)
    fingerprint = (config.base_model or {}).get("fingerprint")
    lines = [
        "# HeadMap adapter (circuitlab)",
        "",
        f"{config.variant.label} (rank {config.r}, scale {config.scaling}) for `{base}`"
        + (f" (weight fingerprint `{fingerprint}`)" if fingerprint else "") + ", in PEFT's adapter format. "
        f"It maps these heads (layer: query heads) into the residual stream: {heads}."
        + (" It holds LoRA/DoRA layers too (`lora` in adapter_config.json), trained with the map." if config.lora else ""),
        "",
        "Load it with PEFT once HeadMap is registered (one call; circuitlab must be installed):",
        "",
        "```python",
        "from circuitlab.headmap import register",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        "register()",
        f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "THIS_DIR")',
        "```",
        "",
        "`circuitlab.headmap.load(model, \"THIS_DIR\")` does the same and first checks that `model` has the weights the "
        "adapter was trained on. Evaluate it with `circuitlab eval --model MODEL --task TASK --adapter THIS_DIR`, or with "
        f"lm-evaluation-harness: `circuitlab lm-eval --model hf --model_args pretrained={base},peft=THIS_DIR --tasks ...`.",
        "",
    ]
    if config.variant.mergeable and config.lora:
        lines += ["Without circuitlab: `circuitlab merge` folds the map and the LoRA/DoRA layers into a stock model "
                  "(`export --lora` writes the map alone, so it refuses an adapter that holds both).", ""]
    elif config.variant.mergeable:
        lines += ["Without circuitlab: `circuitlab export RUN --out OUT --lora` writes this map as a stock PEFT LoRA on "
                  "`o_proj` (exact), and `circuitlab merge` folds it into a stock model.", ""]
    else:
        lines += ["The hidden-state variant adds its output after the MLP, where no weight can hold it: it is not "
                  "written as a LoRA nor merged, and loads only with HeadMap registered.", ""]
    return "\n".join(lines)


def lora_card(config, base_id: str | None) -> str:
    base = _base(base_id)
    return "\n".join([
        "# A HeadMap-MHA adapter as a stock PEFT LoRA (circuitlab)",
        "",
        f"The HeadMap map of the adapter one directory up, written exactly as a LoRA on `o_proj` of `{base}`: lora_A "
        "is Down spread over the circuit heads' input columns, lora_B is Up, and lora_B's bias (`lora_bias`) holds the "
        f"map's constant term; alpha / r = {config.scaling}. Nothing of circuitlab is needed to use it:",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "THIS_DIR")',
        "```",
        "",
        f"and `lm_eval --model hf --model_args pretrained={base},peft=THIS_DIR --tasks ...`. To merge it, the base "
        "model's `o_proj` needs a bias to receive the constant term (Llama models have none): load the base with zero "
        "attention biases, then merge,",
        "",
        "```python",
        f'base = AutoModelForCausalLM.from_pretrained("{base}", attention_bias=True)  # q/k/v/o biases start at zero',
        'merged = PeftModel.from_pretrained(base, "THIS_DIR").merge_and_unload()',
        "```",
        "",
    ])
