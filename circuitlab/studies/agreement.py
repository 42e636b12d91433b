"""How alike the circuits located on independent sample sets are: descriptive, outside the registered analysis.

A circuit arm's replicates differ because the locating procedure, run on another sample set, picks other heads. How
many heads they share says what those replicates are: were every circuit the same head set, the arm's spread would
be the training seeds' alone; were they no more alike than random sets, "the circuit" would name nothing stable.
The counts are the overlap report's (`circuitlab.report.comparison`), the chance level its null model
(`circuitlab.report.chance`: as many heads per layer, drawn at random).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from itertools import combinations

from circuitlab.circuits.circuit import Circuit
from circuitlab.report.chance import expected_shared
from circuitlab.report.comparison import head_frequency, shared_heads
from circuitlab.studies.grid import circuit_files


@dataclass(frozen=True)
class Agreement:
    task: str
    circuits: int
    heads: float  # heads in a circuit (the mean, where they differ)
    shared: float  # heads two circuits share, the mean over every pair
    shared_min: int
    shared_max: int
    chance: float  # what two random sets with the same heads per layer share on average, the mean over the pairs
    in_all: int  # heads every circuit holds
    in_any: int  # heads at least one circuit holds


def agreement(task: str, circuits: list[Circuit]) -> Agreement | None:
    """The pairwise overlap of the circuits (one model), against chance; None for fewer than two."""
    if len(circuits) < 2:
        return None
    frequency = head_frequency(circuits).to_numpy()  # refuses circuits of different models
    pairs = list(combinations(circuits, 2))
    shared = [shared_heads(a, b) for a, b in pairs]
    return Agreement(task, len(circuits), statistics.mean(len(c.head_list) for c in circuits),
                     statistics.mean(shared), min(shared), max(shared),
                     statistics.mean(expected_shared(a, b) for a, b in pairs),
                     int((frequency == len(circuits)).sum()), int((frequency > 0).sum()))


def located(p) -> list[Agreement]:
    """Each task's circuits that the study located itself (a `Plan`; every circuit set with two or more done).
    Circuit files a spec gives (`files`) are left out: they were not located on the study's own sample sets."""
    done = {j.out: j for j in p.declared() if j.kind == "locate" and p.states[j.out] == "done"}
    out = []
    for task in p.study.tasks:
        for name, cs in p.study.circuits.items():
            circuits = [Circuit.load(done[f].found) for f in circuit_files(p.study, cs, task) if f in done]
            a = agreement(task if len(p.study.circuits) == 1 else f"{task} ({name})", circuits)
            out += [a] if a else []
    return out


def table(found: list[Agreement]) -> list[str]:
    lines = ["| task | circuits | heads each | heads two circuits share: mean (min–max) | by chance, on average | "
             "in every circuit | in some circuit |", "|---|---|---|---|---|---|---|"]
    for a in found:
        lines.append(f"| {a.task} | {a.circuits} | {a.heads:.1f} | {a.shared:.1f} ({a.shared_min}–{a.shared_max}) | "
                     f"{a.chance:.1f} | {a.in_all} | {a.in_any} |")
    return lines
