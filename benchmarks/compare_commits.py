"""Is the locating engine as fast at one commit as at another? Both timed in one run, alternately.

Checks each revision out into a temporary worktree, then runs that revision's own
`benchmarks/locate.py --skip-plain --prescreen 0` (the exact engine alone) with the same arguments,
alternating between the two for `--rounds` rounds so that drift of the machine's speed hits both
alike. Prints each run's engine time, the medians and their ratio, and the median of the rounds' own
ratios (each round's two runs are neighbours in time, so slow drift cancels within a round).

    python benchmarks/compare_commits.py OLD_REV NEW_REV --rounds 2 -- --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def engine_seconds(tree: Path, args: list[str], out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))  # that revision's circuitlab, not the installed one
    subprocess.run([sys.executable, str(tree / "benchmarks" / "locate.py"), "--skip-plain", "--prescreen", "0",
                    "--json", str(out), *args], env=env, cwd=tree, check=True)
    return json.loads(out.read_text())["engine"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="also write the numbers here")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # after "--": benchmarks/locate.py's options
    args = p.parse_args(argv[:cut])
    given = argv[cut + 1:]
    rest = [str(Path(a).resolve()) if Path(a).exists() else a for a in given]  # paths work from any tree
    times: dict[str, list[float]] = {args.old: [], args.new: []}
    heads = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for rev in (args.old, args.new):
            trees[rev] = Path(tmp) / rev.replace("/", "_")
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(trees[rev]), rev], check=True,
                           capture_output=True)
        try:
            for r in range(args.rounds):
                for rev in (args.old, args.new) if r % 2 == 0 else (args.new, args.old):
                    result = engine_seconds(trees[rev], rest, Path(tmp) / "out.json")
                    times[rev].append(result["wall_s"])
                    heads[rev] = result["heads"]
                    print(f"round {r + 1}: {rev}: engine {result['wall_s']:.1f} s", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    old, new = (statistics.median(times[rev]) for rev in (args.old, args.new))
    paired = statistics.median(b / a for a, b in zip(times[args.old], times[args.new]))
    same = heads[args.old] == heads[args.new]
    print(f"median engine time: {args.old} {old:.1f} s, {args.new} {new:.1f} s; new/old = {new / old:.3f}; "
          f"median of the rounds' new/old = {paired:.3f}; heads identical: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"times_s": times, "median_ratio_new_over_old": new / old,
                                               "median_paired_ratio": paired, "heads_identical": same,
                                               "args": given}, indent=1) + "\n")


if __name__ == "__main__":
    main()
