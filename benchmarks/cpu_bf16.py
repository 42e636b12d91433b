"""bf16 against float32 on this CPU, for a 7B layer's matmuls: the forward (`F.linear`, x @ W^T) and the backward's
gradient of the input (g @ W, the product autograd runs for every frozen Linear a loss flows back through).

On CPUs without AVX512-BF16, torch's bf16 `F.linear` is a few times slower than float32, but its bf16 `g @ W`
falls back to a far slower kernel: bf16 locating (forwards only) runs, bf16 training does not (docs/scale.md).

    python benchmarks/cpu_bf16.py --json benchmarks/results/cpu_bf16.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def gflops(fn, flop: float) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    return round(flop / (time.perf_counter() - start) / 1e9, 2)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--d-in", type=int, default=4096)
    p.add_argument("--d-out", type=int, default=11008)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    t, d_in, d_out = args.tokens, args.d_in, args.d_out
    flop = 2.0 * t * d_in * d_out
    result = {"threads": torch.get_num_threads(), "tokens": t, "d_in": d_in, "d_out": d_out}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        x, w, g = (torch.randn(*shape, dtype=dtype) for shape in ((t, d_in), (d_out, d_in), (t, d_out)))
        result[f"{name}_forward_gflops"] = gflops(lambda: torch.nn.functional.linear(x, w), flop)
        result[f"{name}_grad_input_gflops"] = gflops(lambda: g @ w, flop)
    result["bfloat16_grad_input_via_float32_gflops"] = gflops(lambda: (g.float() @ w.float()).bfloat16(), flop)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
