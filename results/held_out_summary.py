"""The table and figure of Finding 1 out of sample, from the TASK.json files `circuitlab held-out` wrote.

    python results/held_out_summary.py results/held_out --md results/held_out.md --figures results/held_out

Per task and curve point: the mean loss (nats/token) over the held-out documents with nothing masked and with each
selection masked (random: the mean of its draws), and the circuit minus greedy and minus random with their 95 %
bootstrap intervals (documents resampled; for random, the draws with them: `circuitlab.report.paired`), and on how
many documents the circuit's mask costs more than greedy's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from circuitlab.core.io import write_text_atomic
from circuitlab.report.comparison_figures import paired_differences
from circuitlab.report.write import write_figures
from circuitlab.studies.held_out import TaskHeldOut


def ci(c: dict | None) -> str:
    return "–" if c is None else f"{c['difference']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]"


def rows(r: TaskHeldOut) -> list[str]:
    """One row per curve point; "–" where the circuit file has no selection of that strategy."""
    lc, greedy, random = r.selections[0], r.of("greedy"), r.of("random")
    out = []
    for i, row in enumerate(r.comparisons):
        g = f"{np.mean(greedy[0].losses[i]):.2f}" if greedy else "–"
        rd = f"{np.mean([s.losses[i] for s in random]):.2f}" if random else "–"
        above = f"{int((np.array(lc.losses[i]) > np.array(greedy[0].losses[i])).sum())}/{len(r.doc_indices)}" \
            if greedy else "–"
        out.append(f"| {r.task} ({r.split}, {len(r.doc_indices)}) | 0..{row['point']} | {np.mean(r.baseline):.2f} | "
                   f"**{np.mean(lc.losses[i]):.2f}** | {g} | {rd} | {ci(row.get('greedy'))} | {ci(row.get('random'))} | "
                   f"{above} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", help="the directory of TASK.json files")
    p.add_argument("--md", help="write the table here")
    p.add_argument("--figures", help="write the figure into this directory")
    args = p.parse_args()
    results = [TaskHeldOut.load(f) for f in sorted(Path(args.dir).glob("*.json"))]
    lines = ["| task (split, docs) | layers masked | unmasked | circuit (its strategy) | greedy | random (mean of draws) | "
             "circuit − greedy [95 % CI] | circuit − random [95 % CI] | docs where circuit > greedy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines += rows(r)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        write_text_atomic(args.md, text)
    if args.figures:
        last = [(r.task, f"circuit − {other}", r.comparisons[-1][other]) for r in results
                for other in ("greedy", "random") if other in r.comparisons[-1]]
        points = sorted({r.comparisons[-1]["point"] for r in results})
        fig = paired_differences(last, f"Finding 1 on held-out documents: loss with the selected heads of layers "
                                       f"0..{'/'.join(map(str, points))} masked, the circuit minus each other selection "
                                       "(bars: 95 % bootstrap)", "difference in loss (nats/token)")
        write_figures({"held_out_differences": fig}, args.figures)


if __name__ == "__main__":
    main()
