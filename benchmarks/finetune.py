"""Benchmark: training tokens/s of the bridge loop (the tests' reference) and the HF Trainer path, in one run.

The same documents (the first STEPS x BATCH of the task's train split), the same method, heads, seed and
batch size; each path trains one epoch of STEPS optimizer steps on its own fresh copy of the model. The
time is the wall time of the training call (data order, forward, backward, optimizer, the end-of-epoch
checkpoint), not the model loading. Tokens are the documents' tokens (padding not counted).

    python benchmarks/finetune.py --data-dir ../shared/data --task sst2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from circuitlab.finetune import TrainConfig
from circuitlab.models import load_plain
from circuitlab.finetune.data import encode_docs
from circuitlab.finetune.trainer import train as trainer_train
from circuitlab.finetune.wrap import wrap
from circuitlab.circuits.heads import random_heads
from circuitlab.models import load_model
from circuitlab.core.provenance import package_versions
from circuitlab.tasks import load_docs
from tests.finetune import reference  # the bridge loop (run from the repository root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir")
    p.add_argument("--method", default="headmap-mha+lora")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--heads-per-layer", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args()

    cfg = TrainConfig(model=args.model, task=args.task, method=args.method, batch_size=args.batch_size,
                      micro_batch_size=args.micro_batch_size, epochs=1, max_train=args.steps * args.batch_size,
                      warmup_steps=2, max_len=512)
    docs = load_docs(args.task, "train", args.data_dir, limit=cfg.max_train)
    out: dict = {"command": " ".join(["python", "benchmarks/finetune.py", *sys.argv[1:]]), "model": args.model, "task": args.task,
                 "method": args.method, "steps": args.steps, "batch_size": args.batch_size,
                 "micro_batch_size": args.micro_batch_size, "device": args.device,
                 "torch_threads": torch.get_num_threads(), "versions": package_versions()}
    with tempfile.TemporaryDirectory() as tmp:
        bridged = load_model(args.model, device=args.device, dtype="float32")
        tokens = sum(len(s) for s in encode_docs(bridged.tokenizer, docs, cfg.max_len))
        heads = random_heads(cfg.seed, range(bridged.n_layers), bridged.n_heads, args.heads_per_layer).as_dict()
        adapters = reference.build_adapters(bridged, cfg, heads if cfg.variant else None)
        start = time.perf_counter()
        old = reference.train(bridged, cfg, adapters, docs)
        out["bridge"] = {"seconds": time.perf_counter() - start, "loss_curve": old["loss_curve"]}
        print(f"bridge loop: {out['bridge']['seconds']:.1f} s", flush=True)
        del bridged, adapters

        plain = load_plain(args.model, args.device, "float32")
        wrapped = wrap(plain, cfg, heads if cfg.variant else None)
        seqs = encode_docs(plain.tokenizer, docs, cfg.max_len)
        start = time.perf_counter()
        new = trainer_train(plain, wrapped, cfg, seqs, [], Path(tmp) / "trainer", progress=False)
        out["trainer"] = {"seconds": time.perf_counter() - start, "loss_curve": new["loss_curve"]}
    out["tokens"] = tokens
    for path in ("bridge", "trainer"):
        out[path]["tokens_per_s"] = tokens / out[path]["seconds"]
    out["trainer_over_bridge"] = out["trainer"]["tokens_per_s"] / out["bridge"]["tokens_per_s"]
    out["max_abs_loss_diff"] = max(abs(a - b) for a, b in zip(out["bridge"]["loss_curve"], out["trainer"]["loss_curve"]))
    print(f"{args.model} {args.task} {args.method}: {args.steps} steps x {args.batch_size} docs, {tokens} tokens, "
          f"{args.device}, {out['torch_threads']} threads")
    for path in ("bridge", "trainer"):
        print(f"  {path:8s} {out[path]['seconds']:7.1f} s  {out[path]['tokens_per_s']:8.1f} tokens/s")
    print(f"  trainer / bridge: {out['trainer_over_bridge']:.2f}x   max |loss difference| per step: "
          f"{out['max_abs_loss_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
