"""Models: names, loading (embedded GGUF, tiny random Llamas, hub ids, local directories), devices,
and identity (dimensions, and whether two descriptions name the same weights).

`names` (what --model NAME refers to), `hub` (is the hub reachable), `device` and `placement` (checked
before loading), `config` (ModelConfig: the options every loading command shares), `identity` (ModelDims,
the one same-model check), `fingerprint` (which weights these are), `llama` (the one structural
assumption), `sources` (HF model + tokenizer for each kind of name), `loaded` (the bridged model),
`plain` (the plain HF model fine-tuning trains), `export` (a model as a plain HF directory). The light modules import no torch.
"""

from circuitlab.core.lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "DTYPES": "device", "check_device": "device", "ModelConfig": "config", "Placement": "placement",
    "HUB_ALIASES": "names", "TINY_CONFIGS": "names", "ModelSource": "names",
    "resolve": "names", "ModelDims": "identity", "ModelIdentity": "identity", "check_same_model": "identity",
    "hf_identity": "fingerprint", "weight_fingerprint": "fingerprint", "weight_probe": "fingerprint",
    "decoder_layers": "llama", "model_dims": "dims", "embedded_tokenizer": "sources", "load_hf": "sources",
    "model_config": "sources", "tiny_model": "sources", "torch_dtype": "sources", "LoadedModel": "loaded",
    "load_model": "loaded", "bridge_hf": "loaded", "as_bridged": "loaded", "input_device": "view",
    "HFModelView": "view", "PlainModel": "plain", "load_plain": "plain", "as_plain": "plain", "export_model": "export",
})
