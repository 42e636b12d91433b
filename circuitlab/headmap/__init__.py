"""HeadMap (paper, Section 5): map the outputs of a circuit's heads into the residual stream, as a PEFT method.

Laid out like a PEFT tuner. After `register()` (which circuitlab calls itself wherever it builds or loads a
HeadMap adapter), on a plain `transformers` causal LM of the Llama family:

    config = HeadMapConfig.from_circuit(circuit, variant="mha", r=32)
    model = peft.get_peft_model(model, config)        # trains only the maps
    model.save_pretrained(DIR)                         # adapter_config.json + adapter_model.safetensors
    model = peft.PeftModel.from_pretrained(base, DIR)  # or circuitlab.headmap.load(base, DIR): checks the base
    merged = model.merge_and_unload()                  # "mha" folds into o_proj; "hs" refuses

`variant` (Variant: MHA or HS, and what each does), `config` (HeadMapConfig: what), `layer` (HeadMapLayer: the map; HeadMap's PEFT layers), `tuner` (HeadMapTuner:
PEFT's model class, the one wiring, which a TransformerBridge over the model also runs; `register`),
`adapter` (adapter directories, PEFT's format and circuitlab's earlier one), `conversion` (export, merge into
o_proj, a stock PEFT LoRA).
"""

from circuitlab.core.lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "VARIANTS": "variant", "Variant": "variant", "HeadMapConfig": "config", "HeadMapLayer": "layer",
    "HeadMapLinear": "layer", "HeadMapSink": "layer", "HeadMapTuner": "tuner", "maps": "tuner", "register": "tuner",
    "base_info": "adapter", "check_base": "adapter", "load": "adapter", "load_any": "adapter",
    "read_config": "adapter", "AdapterDir": "dirs",
})
