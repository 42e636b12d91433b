"""Greedy generation with Hugging Face's KV cache against full forwards at every step (`exact_match` tasks),
alternating in one process on the same docs, their generated texts compared.

    python benchmarks/generation.py --task add_sub --split test --limit 200 --rounds 3 \
        --json benchmarks/results/generation_cache.json

The plain SmolLM2 model (what `circuitlab eval` and `finetune` evaluate on); batch 16, longest prompts first,
as `circuitlab.evaluate.generation.generate_answers` runs them.
"""

import argparse
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="add_sub")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", help="write the timings and the comparison here")
    args = ap.parse_args()

    import torch

    from circuitlab.evaluate.generation import generate_answers
    from circuitlab.models.plain import load_plain
    from circuitlab.tasks import load_docs

    model = load_plain(args.model)
    docs = load_docs(args.task, args.split, limit=args.limit)
    times: dict[str, list[float]] = {"cache": [], "full": []}
    texts: dict[str, list[str]] = {}
    for r in range(args.rounds):
        for mode in ("cache", "full") if r % 2 == 0 else ("full", "cache"):
            start = time.perf_counter()
            gens = generate_answers(model, docs, args.batch_size, progress=False, cache=mode == "cache")
            times[mode].append(time.perf_counter() - start)
            texts.setdefault(mode, [g.generated for g in gens])
            print(f"round {r} {mode}: {times[mode][-1]:.1f} s")
    same = sum(a == b for a, b in zip(texts["cache"], texts["full"]))
    median = {m: statistics.median(t) for m, t in times.items()}
    ratios = [f / c for f, c in zip(times["full"], times["cache"])]
    out = {"model": args.model, "task": args.task, "split": args.split, "docs": len(docs),
           "batch_size": args.batch_size, "threads": torch.get_num_threads(), "seconds": times,
           "median_seconds": median, "speedup_median": median["full"] / median["cache"],
           "speedup_paired": ratios, "identical_texts": same}
    print(f"{len(docs)} docs: cache {median['cache']:.1f} s, full {median['full']:.1f} s, "
          f"{out['speedup_median']:.2f}x (paired {min(ratios):.2f}-{max(ratios):.2f}x); "
          f"identical generated texts {same}/{len(docs)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
