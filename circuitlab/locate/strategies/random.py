"""Baselines: n random heads per layer (`random`), or n random heads per layer among those another
circuit did not choose (`redundant`, the paper's Appendix C). One selection per seed; the first
seed's is the circuit, the others ride along as its `selections`."""

from __future__ import annotations

from circuitlab.circuits.circuit import Selection
from circuitlab.circuits.heads import random_heads
from circuitlab.locate.steps import Step
from circuitlab.locate.strategies.base import Located, Strategy, baseline_loss, loss_curve, register


def steps(plan) -> list[Step]:
    return [Step("baseline")] + [Step("curve", seed=s) for s in plan.seeds]


def _locate(name: str):
    def locate(ev, plan, memo) -> Located:
        sels = {s: random_heads(s, plan.layers, plan.n_heads, plan.n, plan.exclude) for s in plan.seeds}
        baseline = baseline_loss(ev, plan, memo)
        curves = {s: loss_curve(ev, plan, memo, sel, seed=s) for s, sel in sels.items()}
        first, *others = plan.seeds
        return Located(sels[first], baseline, curves[first],
                       selections=[Selection(name, sels[s].as_dict(), curves[s], s) for s in others])

    return locate


register(Strategy("random", _locate("random"), steps, seeded=True))
register(Strategy("redundant", _locate("redundant"), steps, seeded=True, needs_circuit=True))
