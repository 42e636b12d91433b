"""Check an exported HeadMap adapter on a GPU against the CPU fp32 reference.

Loads the adapter's base model twice as a plain Hugging Face model (no TransformerLens): in fp32 on
the CPU, and in bf16 on the GPU(s) with `device_map="auto"`. Loads the adapter onto both with
`circuitlab.headmap.load`, scores the same documents, and compares accuracy and logits. On a machine
without CUDA it says so and exits with status 0.

    python benchmarks/gpu_check.py --adapter exported/DIR --task sst2 --data-dir ../shared/data --limit 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Plain:
    """The few attributes circuitlab.evaluate.scoring reads from a model, for a plain HF model."""

    name: str
    hf_model: object
    tokenizer: object

    @property
    def config(self):
        return self.hf_model.config

    @property
    def device(self):
        return self.hf_model.get_input_embeddings().weight.device


def run(model: Plain, docs, probe_ids) -> dict:
    from circuitlab.evaluate.scoring import score_docs

    start = time.perf_counter()
    scores = score_docs(model, docs, batch_size=16, progress=False)
    with torch.no_grad():
        logits = model.hf_model(input_ids=probe_ids.to(model.device)).logits.float().cpu()
    return {"scores": scores, "logits": logits, "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", help="directory from `circuitlab export`")
    p.add_argument("--random-adapter", metavar="MODEL",
                   help="instead: a HeadMap-MHA adapter with random weights on MODEL's heads 0 and 1 of every layer "
                        "(its numbers check the port, not a trained model)")
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir", help="local data laid out like ../shared/data")
    p.add_argument("--split", help="default: the task's evaluation split")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--model", help="base model name (default: the adapter's)")
    p.add_argument("--max-acc-diff", type=float, default=0.02, help="largest accuracy gap accepted (bf16 vs fp32)")
    p.add_argument("--out", help="write the comparison as JSON")
    args = p.parse_args(argv)

    if not torch.cuda.is_available():
        print("no CUDA device on this machine: GPU check skipped (nothing to compare)")
        return 0
    if (args.adapter is None) == (args.random_adapter is None):
        print("gpu_check: error: give --adapter DIR or --random-adapter MODEL", file=sys.stderr)
        return 2
    if args.random_adapter:
        args.adapter = random_adapter(args.random_adapter)

    from circuitlab.core.errors import CircuitlabError
    from circuitlab.evaluate import compute_metrics
    from circuitlab.headmap import load, read_config
    from circuitlab.models import load_plain
    from circuitlab.tasks import get_task, load_docs

    try:
        config = read_config(args.adapter)
        name = args.model or (config.base_model or {}).get("name")
        task = get_task(args.task)
        docs = load_docs(task, args.split or task.eval_split, args.data_dir, limit=args.limit)
        plain = load_plain(name, "cpu", "float32")
        tok = plain.tokenizer
        gpu_model, _ = load_plain_dispatched(name)
        cpu_model = load(plain.hf_model, args.adapter)
        gpu_model = load(gpu_model, args.adapter)  # checks the bf16 weights against the adapter's base model too
    except CircuitlabError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    probe = torch.tensor([tok(d.prompt + d.target).input_ids for d in docs[:1]])
    cpu = run(Plain(name, cpu_model, tok), docs, probe)
    gpu = run(Plain(name, gpu_model, tok), docs, probe)
    acc_cpu = compute_metrics(task, cpu["scores"])["acc"]
    acc_gpu = compute_metrics(task, gpu["scores"])["acc"]
    agree = sum(a.pred == b.pred for a, b in zip(cpu["scores"], gpu["scores"])) / len(docs)
    diff = (cpu["logits"] - gpu["logits"]).abs()
    corr = torch.corrcoef(torch.stack([cpu["logits"].flatten(), gpu["logits"].flatten()]))[0, 1].item()
    report = {
        "adapter": str(args.adapter), "model": name, "task": task.name, "n_docs": len(docs),
        "gpu": torch.cuda.get_device_name(0), "n_gpus": torch.cuda.device_count(),
        "acc_cpu_fp32": acc_cpu, "acc_gpu_bf16": acc_gpu, "prediction_agreement": agree,
        "logits_max_abs_diff": diff.max().item(), "logits_mean_abs_diff": diff.mean().item(), "logits_corr": corr,
        "seconds_cpu": cpu["seconds"], "seconds_gpu": gpu["seconds"],
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    ok = abs(acc_cpu - acc_gpu) <= args.max_acc_diff and corr > 0.99
    print("OK: bf16 on GPU agrees with fp32 on CPU" if ok else "MISMATCH: bf16 on GPU differs from fp32 on CPU")
    return 0 if ok else 1


def random_adapter(name: str) -> str:
    """A HeadMap-MHA adapter on heads 0 and 1 of every layer of `name`, all weights random, in a temp dir."""
    import tempfile

    from peft import get_peft_model

    from circuitlab.headmap import HeadMapConfig, base_info, maps, register
    from circuitlab.models import load_plain

    model = load_plain(name, "cpu", "float32").hf_model
    register()
    config = HeadMapConfig(variant="mha", heads={la: [0, 1] for la in range(model.config.num_hidden_layers)}, r=8,
                           base_model=base_info(model, name))
    pm = get_peft_model(model, config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in maps(pm).values():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    directory = tempfile.mkdtemp(prefix="circuitlab-adapter-")
    pm.save_pretrained(directory)
    return directory


def load_plain_dispatched(name: str):
    """The base model in bf16, dispatched over every visible GPU by accelerate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from circuitlab.core.io import cache_dir
    from circuitlab.models import load_hf, load_plain, resolve

    src = resolve(name)
    if src.kind == "tiny":
        plain = load_plain(name, "cuda", "bfloat16")
        return plain.hf_model, plain.tokenizer
    if src.kind == "embedded":
        load_hf(name)  # makes sure the safetensors cache exists
        path = str(cache_dir() / "smollm2-135m")
    else:
        path = src.hf_id
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="auto", attn_implementation="eager")
    return model.eval(), tok


if __name__ == "__main__":
    sys.exit(main())
