"""What a strategy is, and the steps strategies share.

A strategy is one function `locate(ev, plan, memo) -> Located` (`ev`: an Evaluator; `plan`: the
resolved LocateConfig; `memo`: replays finished steps), the list of steps it will run (for the
progress bar's total), and a few facts the rest of circuitlab reads instead of testing its name.
Every strategy file ends with one `register(Strategy(...))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from circuitlab.circuits.circuit import Selection
from circuitlab.core.errors import ConfigError
from circuitlab.circuits.heads import HeadMask
from circuitlab.core.io import nan_to_null, null_to_nan
from circuitlab.locate.steps import Memo, Step

if TYPE_CHECKING:
    from circuitlab.locate.plan import Plan

NAN = float("nan")


class Evaluator(Protocol):
    model: object  # circuitlab.models.LoadedModel
    n_samples: int

    def losses(self, layer: int, base: HeadMask, heads: Sequence[int | None]) -> list[float]:
        """For each h: the loss with `base` (heads of layers < `layer`) plus head h of `layer`
        masked; h = None masks `base` alone. `layer` may be n_layers (then heads = [None])."""
        ...

    def curve(self, sel: HeadMask, layers: Sequence[int]) -> list[float]:
        """For each k in `layers`: the loss with the heads of `sel` in layers up to k masked."""
        ...

    def attribution(self, layer: int, base: HeadMask) -> tuple[float, list[float]]:
        """(loss with `base` masked, an estimate of each head of `layer`'s `losses` entry)."""
        ...


@dataclass
class Located:
    """What a strategy found: the selection and the numbers behind it."""

    heads: HeadMask
    baseline: float
    curve: list[float]
    tables: dict[str, list[list[float]]] = field(default_factory=dict)
    selections: list[Selection] = field(default_factory=list)  # e.g. the other seeds' selections


@dataclass(frozen=True)
class Strategy:
    name: str
    locate: Callable[["Evaluator", "Plan", Memo], Located]
    steps: Callable[["Plan"], list[Step]]
    selected_by: str | None = None  # the score table whose top n per layer are the heads
    seeded: bool = False  # the heads are drawn from seeds
    needs_circuit: bool = False  # it avoids another circuit's heads
    aliases: tuple[str, ...] = ()


REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    for name in (strategy.name, *strategy.aliases):
        REGISTRY[name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The strategy called `name` (an alias resolves to its strategy: `single` is `greedy`)."""
    if name not in REGISTRY:
        raise ConfigError("strategy", f"must be one of {', '.join(REGISTRY)}; got {name!r}")
    return REGISTRY[name]


# -- steps shared by strategies ---------------------------------------------------------------------


def score_layer(ev: "Evaluator", plan: "Plan", layer: int, base: HeadMask, with_base: bool) -> dict:
    """Losses of masking each head of `layer` on top of `base` (only the attribution top K when
    prescreening), plus the loss of `base` alone when `with_base`; JSON-safe, for the memo."""
    candidates, estimate = list(range(plan.n_heads)), None
    if plan.prescreen is not None:
        _, estimate = ev.attribution(layer, base)
        candidates = sorted(sorted(candidates, key=lambda h: (-estimate[h], h))[: plan.prescreen])
    out = ev.losses(layer, base, ([None] if with_base else []) + candidates)
    row = [NAN] * plan.n_heads
    for h, x in zip(candidates, out[1:] if with_base else out):
        row[h] = x
    return {"base": out[0] if with_base else None, "losses": nan_to_null(row), "estimate": estimate}


def empty_tables(ev: "Evaluator", plan: "Plan", name: str) -> dict[str, list[list[float]]]:
    rows = ev.model.n_layers
    tables = {name: [[NAN] * plan.n_heads for _ in range(rows)]}
    if plan.prescreen is not None:
        tables[f"{name}_estimate"] = [[NAN] * plan.n_heads for _ in range(rows)]
    return tables


def fill(tables: dict, name: str, layer: int, scored: dict) -> list[float]:
    """Put a `score_layer` result into the tables; returns the exact row."""
    tables[name][layer] = null_to_nan(scored["losses"])
    if scored["estimate"] is not None:
        tables[f"{name}_estimate"][layer] = list(scored["estimate"])
    return tables[name][layer]


def baseline_loss(ev: "Evaluator", plan: "Plan", memo: Memo) -> float:
    return memo(Step("baseline"), lambda: ev.losses(plan.layers[0], HeadMask(), [None])[0])


def loss_curve(ev: "Evaluator", plan: "Plan", memo: Memo, sel: HeadMask, seed: int | None = None) -> list[float]:
    """For each located layer k: the loss with the selected heads of layers up to k masked."""
    return memo(Step("curve", seed=seed), lambda: ev.curve(sel, plan.layers))
