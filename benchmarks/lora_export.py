"""Measurement: how closely `circuitlab export --lora` reproduces a trained HeadMap-MHA adapter, per model.

A HeadMap-MHA run is trained on the model (random heads, a few steps, so its maps are not zero), exported as a stock
PEFT LoRA on o_proj, and the logits of a fixed batch are compared: HeadMap adapter vs the LoRA (adapted, and merged
into a base loaded with `attention_bias=True`), in float32 and in float64, and HeadMap's own float32 logits against
its float64 ones (what float32 arithmetic costs the model anyway). The conversion's one rounding is the float32 bias of
lora_B, so the float64 difference is the conversion's error and the float32 one adds each side's own rounding.

    python benchmarks/lora_export.py --models tiny-llama smollm2-135m --json benchmarks/results/lora_export.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fixed batch
from circuitlab.core.provenance import package_versions  # noqa: E402
from circuitlab.finetune import TrainConfig, finetune  # noqa: E402
from circuitlab.headmap import register  # noqa: E402
from circuitlab.headmap.conversion import export  # noqa: E402
from circuitlab.models import load_plain  # noqa: E402
from circuitlab.models.export import export_model  # noqa: E402
from tests.helpers import IDS  # noqa: E402


@torch.no_grad()
def logits(base: Path, adapter: Path, dtype: torch.dtype, merge: bool = False) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attention_bias=merge)
    peft_model = PeftModel.from_pretrained(model, adapter).eval()
    return (peft_model.merge_and_unload() if merge else peft_model)(input_ids=IDS).logits.double()


def measure(name: str, tmp: Path) -> dict:
    cfg = TrainConfig(model=name, task="capitals", method="headmap-mha", heads="random", heads_per_layer=2, rank=8,
                      batch_size=4, epochs=2, warmup_steps=0, max_train=8, eval_limit=4, lr=5e-2)
    finetune(load_plain(name), cfg, tmp / "run", progress=False)
    export(tmp / "run", tmp / "exported", lora=True)
    export_model(name, tmp / "base")
    register()
    headmap = {dt: logits(tmp / "base", tmp / "run" / "adapter", dt) for dt in (torch.float32, torch.float64)}
    out = {"max |logit|": headmap[torch.float64].abs().max().item(),
           "headmap fp32 vs fp64": (headmap[torch.float32] - headmap[torch.float64]).abs().max().item()}
    for dt in (torch.float32, torch.float64):
        for merge in (False, True):
            lora = logits(tmp / "base", tmp / "exported" / "lora", dt, merge)
            out[f"lora {'merged' if merge else 'adapted'} vs headmap, {str(dt)[6:]}"] = (lora - headmap[dt]).abs().max().item()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny-llama"])
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args()
    torch.manual_seed(0)
    results = {"command": " ".join(["python", "benchmarks/lora_export.py", *sys.argv[1:]]),
               "versions": package_versions(), "max abs difference": {}}
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            results["max abs difference"][name] = measure(name, Path(tmp))
        for key, value in results["max abs difference"][name].items():
            print(f"{name:14s} {key:34s} {value:.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
