"""Benchmark: how long `circuitlab` takes to start, as a user meets it: fresh processes, each timed whole.

Commands: `--help`, and option errors that need no model (a bad value, an unknown task, a layer range the model
does not have: read from its config file). Each is run `--runs` times after one warm-up; the median and the range
are printed, with the environment that decides import times (PYTHONDONTWRITEBYTECODE: without bytecode caching
every import compiles its module again). What is not imported matters more than what is: the heavy libraries
(torch, transformers, TransformerLens) are never imported before the options are checked (tests/test_layout.py).

    python benchmarks/startup.py --runs 7 --before a913860 --json benchmarks/results/startup.json

`--before REV` times that revision's circuitlab too (exported with `git archive`, run from its own tree), the two
alternating run by run, so the ratio holds however the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from circuitlab.core.provenance import package_versions

COMMANDS = {
    "help": ["--help"],
    "bad value": ["locate", "--heads-per-layer", "0", "--task", "capitals"],
    "unknown task": ["finetune", "--task", "nope", "--method", "lora", "--out", "x"],
    "layers out of range": ["locate", "--model", "tiny-llama", "--task", "capitals", "--layers", "3-9"],
    "hub model, no network": ["locate", "--model", "meta-llama/Llama-2-7b-hf", "--task", "capitals"],
}


REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str], tree: Path = REPO) -> tuple[float, int]:
    """One fresh process of `python -m circuitlab ARGV`, with `tree`'s circuitlab (its directory first on the path)."""
    start = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "circuitlab", *argv], capture_output=True, cwd=tree,
                        env={**os.environ, "PYTHONPATH": str(tree)}).returncode
    return time.perf_counter() - start, rc


def summary(times) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--before", metavar="REV", help="also time this git revision, alternating with this tree")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args()
    out: dict = {"command": " ".join(["python", "benchmarks/startup.py", *sys.argv[1:]]), "runs": args.runs,
                 "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
                 "versions": package_versions(), "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": REPO}
        if args.before:
            archive = subprocess.run(["git", "archive", args.before], cwd=REPO, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees[args.before] = Path(tmp)
        for name, argv in COMMANDS.items():
            times: dict = {tree: [] for tree in trees}
            codes: dict = {tree: set() for tree in trees}
            for tree, path in trees.items():
                timed(argv, path)  # warm-up: file caches
            for _ in range(args.runs):
                for tree, path in trees.items():
                    seconds, rc = timed(argv, path)
                    times[tree].append(seconds)
                    codes[tree].add(rc)
            out["seconds"][name] = {tree: {**summary(ts), "exit_codes": sorted(codes[tree])} for tree, ts in times.items()}
            line = "  ".join(f"{tree}: median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f}; "
                             f"exit {sorted(codes[tree])})" for tree, ts in times.items())
            print(f"{name:20s} {line}   circuitlab {' '.join(argv)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
