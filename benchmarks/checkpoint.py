"""Random-weight Hugging Face checkpoints of real shapes, written to disk the way the hub ships them.

A 7B model on this project's machines cannot be downloaded (no hub), and `scale.py`'s in-memory models skip
what a user's run goes through: `from_pretrained` on sharded safetensors, accelerate's device map and disk
offload, a tokenizer of the real vocabulary size. This writes such a directory holding one shard in memory
at a time (10 GB at most, the hub's shard sizes): the tensors are made one at a time (each seeded by its name, so any shard is the same on
every run) and written shard by shard (`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`,
as `save_pretrained` names them), in bfloat16 by default. The weights are N(0, 0.02) as HF's initialisation
(norms 1), so the model computes like a real one at the same cost, but says nothing.

The tokenizer is the embedded SmolLM2's byte-level BPE resized to the shape's vocabulary: cut to the first
V ids (with the merges that stay inside them) for Llama-2's 32,000, or extended by reserved special tokens
for Llama-3's 128,256 (Llama-3 has 256 of its own). Prompts tokenize as SmolLM2 tokenizes them.

    python benchmarks/checkpoint.py llama2-7b --out ckpt/llama2-7b-random   # 13.5 GB, 2 min here
    python benchmarks/checkpoint.py llama3-8b --out ckpt/llama3-8b-random   # 16.1 GB, 2.5 min
    circuitlab locate --model ckpt/llama2-7b-random --task hellaswag --device-map auto --max-memory cpu=10GiB ...

Name the directory for what it is (`...-random`): artefacts record a local model by its directory's name (and
the weight fingerprint), and `llama2-7b` alone is the alias of the real hub model. Nothing written here belongs
in the repository (the directories are several GB). docs/scale.md has the runs made on these.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import SHAPES  # noqa: E402

# What differs between the two families beyond the shape (their hub config.json files).
FAMILY = {
    "llama2-7b": dict(max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5),
    "llama3-8b": dict(max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5),
}
SHARD_BYTES = {"llama2-7b": 10_000_000_000, "llama3-8b": 5_000_000_000}  # the hub's: 2 shards, 4 shards


def llama_config(shape: str, layers: int | None = None):
    from transformers import LlamaConfig

    n_layers, heads, kv, d, ff, vocab = SHAPES[shape]
    family = FAMILY.get(shape, FAMILY["llama2-7b"])
    return LlamaConfig(num_hidden_layers=layers or n_layers, num_attention_heads=heads, num_key_value_heads=kv,
                       hidden_size=d, intermediate_size=ff, vocab_size=vocab, tie_word_embeddings=False,
                       **family)


def tensor_for(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """HF's initialisation for a Llama parameter, seeded by its name: norms are ones, the rest N(0, 0.02)."""
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=dtype)
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return (torch.randn(shape, generator=gen) * 0.02).to(dtype)


def parameter_shapes(config) -> dict[str, tuple[int, ...]]:
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def resized_tokenizer(vocab: int, out: Path):
    """SmolLM2's tokenizer with exactly `vocab` ids (see the module docstring), saved into `out`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from circuitlab.models.sources import embedded_tokenizer

    base = embedded_tokenizer()
    spec = json.loads(base.backend_tokenizer.to_str())
    kept = {t: i for t, i in spec["model"]["vocab"].items() if i < vocab}
    spec["model"]["vocab"] = kept
    pairs = [m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]]  # either JSON form
    spec["model"]["merges"] = [[a, b] for a, b in pairs if a in kept and b in kept and a + b in kept]
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["id"] < vocab]
    core = Tokenizer.from_str(json.dumps(spec))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=base.bos_token, eos_token=base.eos_token,
                                  pad_token=base.eos_token, unk_token=base.unk_token)
    reserved = vocab - len(tok)
    if reserved > 0:
        tok.add_special_tokens({"additional_special_tokens": [f"<|reserved_special_token_{i}|>" for i in range(reserved)]})
    assert len(tok) == vocab, (len(tok), vocab)
    tok.save_pretrained(out)
    return tok


def write_checkpoint(shape: str, out: Path, dtype: torch.dtype = torch.bfloat16, layers: int | None = None,
                     shard_bytes: int | None = None, seed: int = 0) -> dict:
    """Write the checkpoint into `out` (made in a sibling temporary directory, then renamed: whole or not at all)."""
    from safetensors.torch import save_file

    if out.exists():
        raise SystemExit(f"{out} exists; remove it first")
    config = llama_config(shape, layers)
    shapes = parameter_shapes(config)
    shard_bytes = shard_bytes or SHARD_BYTES.get(shape, 10_000_000_000)
    size = torch.tensor([], dtype=dtype).element_size()
    groups, current, used = [], [], 0
    for name, s in shapes.items():
        n = size * int(torch.Size(s).numel())
        if current and used + n > shard_bytes:
            groups.append(current)
            current, used = [], 0
        current.append(name)
        used += n
    groups.append(current)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weight_map, total, start = {}, 0, time.time()
    for i, names in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: tensor_for(name, shapes[name], dtype, seed) for name in names}
        save_file(tensors, str(tmp / file), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({name: file for name in names})
        print(f"  {file}: {len(names)} tensors, {time.time() - start:.0f} s", file=sys.stderr)
        del tensors
    (tmp / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    tok = resized_tokenizer(config.vocab_size, tmp)
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    config.dtype = dtype
    config.save_pretrained(tmp)
    tmp.rename(out)
    params = sum(int(torch.Size(s).numel()) for s in shapes.values())
    return {"shape": shape, "layers": config.num_hidden_layers, "parameters": params, "bytes": total,
            "shards": len(groups), "dtype": str(dtype).removeprefix("torch."), "seconds": round(time.time() - start, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shape", choices=tuple(SHAPES))
    p.add_argument("--out", type=Path, required=True, help="a directory that does not exist yet")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--layers", type=int, help="fewer layers than the shape's (a quick check of the pipeline)")
    p.add_argument("--shard-bytes", type=int, help="the largest shard (default: as the hub's checkpoints)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    info = write_checkpoint(args.shape, args.out, getattr(torch, args.dtype), args.layers, args.shard_bytes,
                            args.seed)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
