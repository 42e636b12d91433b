"""Algorithm 1 (the paper's layer-conditioned locating): layer by layer, each head's loss with the
heads chosen in earlier layers masked; keep the top n."""

from __future__ import annotations

from circuitlab.circuits.heads import HeadMask, top_heads
from circuitlab.locate.steps import Step
from circuitlab.locate.strategies.base import Located, Strategy, empty_tables, fill, register, score_layer


def steps(plan) -> list[Step]:
    return [Step("conditioned", layer) for layer in plan.layers] + [Step("conditioned", plan.layers[-1] + 1)]


def locate(ev, plan, memo) -> Located:
    """The loss of the chosen heads alone rides along in each layer's batch, which gives the loss
    curve (and, in the first layer, the baseline) for free."""
    chosen, tables, curve = HeadMask(), empty_tables(ev, plan, "conditioned"), []
    for layer in plan.layers:
        scored = memo(Step("conditioned", layer), lambda: score_layer(ev, plan, layer, chosen, with_base=True))
        row = fill(tables, "conditioned", layer, scored)
        curve.append(scored["base"])
        chosen = chosen.plus(layer, top_heads(row, plan.n))
    end = plan.layers[-1] + 1
    curve.append(memo(Step("conditioned", end), lambda: ev.losses(end, chosen, [None])[0]))
    return Located(chosen, curve[0], curve[1:], tables)


register(Strategy("layer-conditioned", locate, steps, selected_by="conditioned"))
