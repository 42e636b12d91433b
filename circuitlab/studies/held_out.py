"""Finding 1 out of sample: a circuit file's selections (layer-conditioned, greedy, random) masked on documents
they were not chosen on, with intervals over those documents.

A circuit is located on samples, and layer-conditioning maximises exactly their loss, so its lead over greedy and
random selections on the same samples is partly selection. Here every selection of a `circuitlab reproduce` circuit
is masked on other documents (the task's evaluation split: never a locating sample, which come from the train
split), each document's mean target NLL kept for each point of the curve (heads of layers 0..k masked). The
comparisons are `circuitlab.report.paired` with documents as the unit: the circuit against greedy (one selection
each: a bootstrap over documents), and against the random draws (their seeds as a second axis: the clustered
bootstrap over draws and documents).

    for each circuit file: its docs -> each selection's per-document curve (`Engine.sample_curve`) -> the paired
    comparisons at each point -> `TASK.json` (an `Artefact`: reused when made from the same inputs)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from circuitlab.circuits.circuit import Circuit, Sample
from circuitlab.circuits.heads import HeadMask
from circuitlab.core.artefact import Artefact
from circuitlab.core.io import read_json_object, write_json_atomic
from circuitlab.report.paired import compare_paired


@dataclass
class SelectionLosses:
    label: str  # "layer-conditioned", "greedy", "random (seed 1)", ...
    strategy: str
    seed: int | None
    losses: list[list[float]]  # [point][doc]: mean target NLL with the selection's heads of layers 0..k masked


@dataclass
class TaskHeldOut:
    """One circuit's selections on held-out documents."""

    task: str
    split: str
    doc_indices: list[int]
    points: list[int]  # k: the heads of layers 0..k are masked
    baseline: list[float]  # per document, nothing masked
    selections: list[SelectionLosses]
    comparisons: list[dict] = field(default_factory=list)  # per point: the circuit vs greedy, vs random
    made_from: dict | None = None

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "TaskHeldOut":
        doc = read_json_object(path)
        doc["selections"] = [SelectionLosses(**s) for s in doc["selections"]]
        return cls(**doc)

    def of(self, strategy: str) -> list[SelectionLosses]:
        """The selections beside the circuit (never the circuit itself, `selections[0]`) of one strategy."""
        return [s for s in self.selections[1:] if s.strategy == strategy]


def compare_selections(result: TaskHeldOut) -> list[dict]:
    """At each point: the circuit's loss minus greedy's and minus the random draws', per document, with intervals
    (documents resampled; for random, the draws resampled with them). Higher = the circuit's mask hurts more."""
    lc = result.selections[0]
    out = []
    for i, k in enumerate(result.points):
        row = {"point": k}
        for other in ("greedy", "random"):
            sels = result.of(other)
            if not sels:
                continue
            b = np.array([s.losses[i] for s in sels])
            a = np.tile(np.array(lc.losses[i]), (len(sels), 1))
            row[other] = asdict(compare_paired(a, b, [s.seed for s in sels], "loss"))
        out.append(row)
    return out


def held_out_losses(model, circuit: Circuit, docs: list, points: list[int], split: str,
                    max_batch_tokens: int | str = "auto") -> TaskHeldOut:
    """Each selection of `circuit` (its own heads first, then `circuit.selections`) masked on `docs`, each document's
    target loss as the circuit's protocol defines it."""
    from circuitlab.locate.engine import Engine  # torch: the dataclasses above are read without it

    ev = Engine(model, [Sample(d.prompt, d.target, d.index) for d in docs], max_batch_tokens,
                protocol=circuit.protocol)
    baseline = ev.sample_curve(HeadMask(), [model.n_layers - 1])[0]
    selections = [SelectionLosses(circuit.label, circuit.strategy, circuit.seed,
                                  ev.sample_curve(circuit.mask, points))]
    for s in circuit.selections:
        selections.append(SelectionLosses(s.label, s.strategy, s.seed, ev.sample_curve(HeadMask.of(s.heads), points)))
    result = TaskHeldOut(circuit.task.name, split, [d.index for d in docs], list(points), baseline, selections)
    result.comparisons = compare_selections(result)
    return result


def held_out_task(model, circuit: Circuit, docs: list, points: list[int], split: str, artefact: Artefact,
                  max_batch_tokens: int | str = "auto", log=print) -> TaskHeldOut:
    """`held_out_losses`, written as `artefact` (whose finished file, made from the same inputs, the caller reuses)."""
    circuit.validate(model)  # the weights the circuit was located on
    result = held_out_losses(model, circuit, docs, points, split, max_batch_tokens)
    result.made_from = artefact.identity
    artefact.commit(lambda: result.save(artefact.path))
    log(f"{circuit.task.name}: wrote {artefact.path}")
    return result
