"""Benchmark: the plain locating loop (the paper's code) against the engine, on the same samples.

Prints both times (wall and CPU), the speed-up, whether the head sets agree and how far the losses
are apart; then the engine with the gradient pre-screen (speed-up, overlap with the exact heads);
then the engine's achieved FLOP/s against a plain matrix multiply's on this machine.

    python benchmarks/locate.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from circuitlab.locate import LocateConfig, locate, locating_samples, parse_layers
from circuitlab.models import load_model
from circuitlab.core.provenance import package_versions


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def max_rel_diff(a, b) -> float:
    """Largest relative difference between two equally shaped nested lists of losses (NaN = skipped)."""
    flat_a, flat_b = (json.loads(json.dumps(x).replace("NaN", "null")) for x in (a, b))

    def walk(x, y):
        if isinstance(x, dict):
            return max((walk(x[k], y[k]) for k in x), default=0.0)
        if isinstance(x, list):
            return max((walk(u, v) for u, v in zip(x, y)), default=0.0)
        if x is None or y is None:
            return 0.0 if x is None and y is None else math.inf
        return abs(x - y) / max(abs(x), 1e-12)

    return walk(flat_a, flat_b)


def matmul_flops_per_s(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.matmul(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        reps += 1
    return 2.0 * m * k * n * reps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--max-docs", type=int, default=200, help="training docs scored to select the samples")
    p.add_argument("--heads-per-layer", type=int, default=2)
    p.add_argument("--strategy", default="layer-conditioned")
    p.add_argument("--prescreen", type=int, default=4, help="K for the pre-screen run (0: skip it)")
    p.add_argument("--max-batch-tokens", type=int, default=4096)
    p.add_argument("--layers", help="locate only in layers A-B (default: all); a shorter, partial comparison")
    p.add_argument("--skip-plain", action="store_true", help="only the engine runs (no speed-up then)")
    p.add_argument("--plain-batch-size", type=int, help="samples per plain forward (default: all in one; "
                   "1 = Algorithm 1's loop over samples)")
    p.add_argument("--compare-dtype", choices=("bfloat16", "float16"),
                   help="also time the engine on the model loaded in this precision (same samples): its speed-up "
                        "over the float32 engine, and its heads against the float32 circuit's")
    p.add_argument("--rounds", type=int, default=1, help="with --compare-dtype: alternate the two engines this "
                   "many times and report the median ratio")
    p.add_argument("--attention", choices=("eager", "sdpa"), default="eager", help="the engine's attention")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()

    torch.manual_seed(0)
    model = load_model(args.model)
    samples, task = locating_samples(model, args.task, args.data_dir, "train", args.samples, args.max_docs)
    lengths = [len(model.tokenizer(s.prompt + s.target).input_ids) for s in samples]
    print(f"{args.model} / {args.task}: {len(samples)} samples ({min(lengths)}-{max(lengths)} tokens), "
          f"{model.n_layers} layers x {model.n_heads} heads, n={args.heads_per_layer}, strategy {args.strategy}, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    layers = parse_layers(args.layers) if args.layers else None
    if layers:
        print(f"only layers {layers[0]}-{layers[1]}", flush=True)

    def run(on=model, **kw):
        kw = {"attention": args.attention, **kw} if not kw.get("plain") else kw
        cfg = LocateConfig(strategy=args.strategy, n_per_layer=args.heads_per_layer,
                           max_batch_tokens=args.max_batch_tokens, layers=layers, **kw)
        return timed(lambda: locate(on, samples, cfg, task, progress=False))

    out = {}
    engine, e_wall, e_cpu = run()
    print(f"engine:    {e_wall:8.1f} s wall {e_cpu:8.1f} s CPU", flush=True)
    out["engine"] = {"wall_s": e_wall, "cpu_s": e_cpu, "heads": engine.heads, "flops": engine.run.engine_flops}

    if args.compare_dtype:
        low_model = load_model(args.model, dtype=args.compare_dtype)
        low, l_wall, l_cpu = run(on=low_model)
        ratios = [e_wall / l_wall]
        for _ in range(args.rounds - 1):  # alternate, so that the machine's drift hits both alike
            ratios.append(run()[1] / run(on=low_model)[1])
        ratio = statistics.median(ratios)
        exact = set(engine.head_list)
        overlap = len(exact & set(low.head_list)) / len(exact)
        layers_same = sum(low.heads.get(la) == hs for la, hs in engine.heads.items())
        print(f"{args.compare_dtype}: {l_wall:8.1f} s wall {l_cpu:8.1f} s CPU: {e_wall / l_wall:.2f}x the float32 "
              f"engine (CPU {e_cpu / l_cpu:.2f}x); median over {len(ratios)} alternating round(s) {ratio:.2f}x "
              f"({', '.join(f'{r:.2f}' for r in ratios)}); head overlap with the float32 circuit {overlap:.1%} "
              f"({layers_same}/{len(engine.heads)} layers the same), final loss {low.loss_curve[-1]:.4f} vs "
              f"{engine.loss_curve[-1]:.4f}", flush=True)
        out[args.compare_dtype] = {"wall_s": l_wall, "cpu_s": l_cpu, "speedup": e_wall / l_wall,
                                   "speedup_per_round": ratios, "speedup_median": ratio, "overlap": overlap,
                                   "layers_same": layers_same, "heads": low.heads,
                                   "final_loss": low.loss_curve[-1], "float32_final_loss": engine.loss_curve[-1]}
        del low_model

    if args.prescreen:
        screened, s_wall, s_cpu = run(prescreen=args.prescreen)
        exact = set(engine.head_list)
        overlap = len(exact & set(screened.head_list)) / len(exact)
        print(f"prescreen: {s_wall:8.1f} s wall {s_cpu:8.1f} s CPU (K={args.prescreen}): "
              f"{e_wall / s_wall:.2f}x faster than the exact engine (CPU {e_cpu / s_cpu:.2f}x), "
              f"head overlap with the exact circuit {overlap:.1%}, final loss {screened.loss_curve[-1]:.4f} "
              f"vs exact {engine.loss_curve[-1]:.4f}", flush=True)
        out["prescreen"] = {"k": args.prescreen, "wall_s": s_wall, "cpu_s": s_cpu, "overlap": overlap,
                            "final_loss": screened.loss_curve[-1], "exact_final_loss": engine.loss_curve[-1]}

    if not args.skip_plain:
        plain, p_wall, p_cpu = run(plain=True, plain_batch_size=args.plain_batch_size)
        same = plain.heads == engine.heads
        diff = max(max_rel_diff(plain.scores, engine.scores), max_rel_diff(plain.loss_curve, engine.loss_curve),
                   max_rel_diff(plain.baseline_loss, engine.baseline_loss))
        per = args.plain_batch_size or len(samples)
        print(f"plain:     {p_wall:8.1f} s wall {p_cpu:8.1f} s CPU ({per} sample(s) per forward)", flush=True)
        print(f"speed-up:  {p_wall / e_wall:.2f}x wall, {p_cpu / e_cpu:.2f}x CPU; head sets identical: {same}; "
              f"max relative loss difference {diff:.2e}", flush=True)
        out["plain"] = {"wall_s": p_wall, "cpu_s": p_cpu, "heads_identical": same, "max_rel_diff": diff,
                        "samples_per_forward": per}

    flops = engine.run.engine_flops
    mm = matmul_flops_per_s(4096, model.d_model, 4 * model.d_model)
    print(f"FLOP/s:    engine {flops / e_wall / 1e9:.1f} GFLOP/s ({flops / 1e12:.2f} TFLOP in {e_wall:.1f} s) vs "
          f"matmul [4096x{model.d_model}]@[{model.d_model}x{4 * model.d_model}] {mm / 1e9:.1f} GFLOP/s "
          f"({flops / e_wall / mm:.0%})", flush=True)
    out["flops"] = {"engine_flop_per_s": flops / e_wall, "matmul_flop_per_s": mm}
    out["command"] = "python benchmarks/locate.py " + " ".join(sys.argv[1:])
    out["torch_threads"] = torch.get_num_threads()
    out["versions"] = package_versions()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
