"""The single-head table (each head masked alone, Figures 1a/1d, 4) and the greedy selection: its
top n per layer. `single` names the same run (it is the table the paper plots)."""

from __future__ import annotations

from circuitlab.circuits.heads import HeadMask, top_heads
from circuitlab.locate.steps import Step
from circuitlab.locate.strategies.base import (
    Located, Strategy, baseline_loss, empty_tables, fill, loss_curve, register, score_layer,
)


def steps(plan) -> list[Step]:
    return [Step("single", layer) for layer in plan.layers] + [Step("baseline"), Step("curve")]


def locate(ev, plan, memo) -> Located:
    tables, chosen = empty_tables(ev, plan, "single"), {}
    for layer in plan.layers:
        scored = memo(Step("single", layer), lambda: score_layer(ev, plan, layer, HeadMask(), with_base=False))
        chosen[layer] = top_heads(fill(tables, "single", layer, scored), plan.n)
    sel = HeadMask.of(chosen)
    return Located(sel, baseline_loss(ev, plan, memo), loss_curve(ev, plan, memo, sel), tables)


register(Strategy("greedy", locate, steps, selected_by="single", aliases=("single",)))
