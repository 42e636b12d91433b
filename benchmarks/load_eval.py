"""Load time of the embedded model (cold: dequantizing the GGUF; warm: the safetensors cache)
and evaluation throughput on arc_easy.

    python benchmarks/load_eval.py --data-dir ../shared/data --limit 200
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time


def timed_load(cache: str) -> float:
    """Load in a fresh interpreter so neither run profits from the other's warm imports or memory."""
    code = (
        "import time; t=time.perf_counter(); from circuitlab.models import load_model; "
        "load_model('smollm2-135m'); print(time.perf_counter()-t)"
    )
    env = dict(os.environ, CIRCUITLAB_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        cold = timed_load(cache)
        warm = timed_load(cache)
    print(f"smollm2-135m load (imports included): cold {cold:.1f} s, warm {warm:.1f} s")

    from circuitlab.evaluate import evaluate
    from circuitlab.models import load_model

    model = load_model("smollm2-135m")
    start = time.perf_counter()
    r = evaluate(model, "arc_easy", args.data_dir, limit=args.limit, batch_size=args.batch_size, progress=False)
    wall = time.perf_counter() - start
    n_req = sum(len(p["logprobs"]) for p in r.predictions)
    print(
        f"arc_easy {r.split}: {r.n_docs} docs ({n_req} requests) in {wall:.1f} s = "
        f"{r.n_docs / wall:.1f} docs/s, batch size {args.batch_size}; acc {r.metrics['acc']:.3f}"
    )


if __name__ == "__main__":
    main()
