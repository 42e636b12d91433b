"""Study 3's minimum detectable effect, stated before its runs (issue 24), projected from study 2's sst2 runs.

`circuitlab stats` reports as "detectable" the true difference its document-level test finds with power 0.8 at
two-sided 0.05: (z_0.975 + z_0.8) x SE, SE the standard error of the documents' differences, each averaged over an
arm's runs. That difference's variance over documents has a part more runs do not remove (the documents on which
the two arms really differ) and, per arm, the run-to-run variance of a document's outcome divided by the number of
runs. Study 2 (3 circuit seeds against 3 random draws, each draw with its own seed) measures both parts; this
projects the detectable difference to other numbers of circuit seeds and head draws. It is a projection: the draws
of study 3 come from the same distribution as study 2's only if its setup is the same.

    python results/study3_power.py results/study2_runs/sst2 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import norm

from circuitlab.tasks import load_docs


def correct(run_dirs: list[Path], golds: np.ndarray) -> np.ndarray:
    return np.array([np.array(json.loads((d / "result.json").read_text())["eval"]["preds"]) == golds
                     for d in run_dirs], dtype=float)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", help="a task's run directories (headmap-circuit-sN, headmap-random-sN, ...)")
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir")
    p.add_argument("--designs", default="3:3,5:8,5:12,8:8,8:16", help="circuit seeds:head draws, comma-separated")
    args = p.parse_args()
    root = Path(args.runs)
    docs = load_docs(args.task, "validation", args.data_dir)
    golds = np.array([d.gold for d in docs])
    z = norm.ppf(0.975) + norm.ppf(0.8)
    c = correct(sorted(root.glob("headmap-circuit-s*")), golds)
    print(f"{args.task}: {c.shape[1]} documents; study 2's runs: {len(c)} circuit seeds")
    for arm in ("random", "redundant"):
        r = correct(sorted(root.glob(f"headmap-{arm}-s*")), golds)
        vc, vr = c.var(0, ddof=1).mean(), r.var(0, ddof=1).mean()  # run-to-run variance of one document's outcome
        total = (c.mean(0) - r.mean(0)).var(ddof=1)
        fixed = max(0.0, total - vc / len(c) - vr / len(r))  # what more runs would not remove
        print(f"circuit vs {arm}: per-document run variance {vc:.4f} (circuit), {vr:.4f} ({arm}); "
              f"the part more runs keep {fixed:.5f}")
        for design in args.designs.split(","):
            nc, nr = (int(x) for x in design.split(":"))
            se = np.sqrt((fixed + vc / nc + vr / nr) / c.shape[1])
            print(f"  {nc} circuit seeds, {nr} {arm} draws: detectable {100 * z * se:.2f} points")


if __name__ == "__main__":
    main()
