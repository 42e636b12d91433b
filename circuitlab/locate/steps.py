"""The steps of a locating run: typed keys, the memo that replays finished steps, and the progress units
each step is worth.

A run is a sequence of steps (a layer's scores, a loss curve, the baseline). After every finished step the
memo hands all finished steps' results to `save` (the run's partial state, `circuitlab.core.artefact`); a
rerun with the same settings replays them instead of computing them, so an interrupted run resumes with the
same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tqdm.auto import tqdm

from circuitlab.core.progress import progress_bar


if TYPE_CHECKING:
    from circuitlab.locate.plan import Plan


@dataclass(frozen=True)
class Step:
    """`conditioned`/`single` (a layer's scores; `layer` = n_layers for the loss with every chosen
    head masked), `baseline` (nothing masked), `curve` (a selection's loss curve; `seed` for random)."""

    kind: str
    layer: int | None = None
    seed: int | None = None

    def __str__(self) -> str:  # the key in the checkpoint file
        if self.seed is not None:
            return f"{self.kind}/seed {self.seed}"
        return f"{self.kind}/{'' if self.layer is None else self.layer}"

    def describe(self, n_layers: int) -> str:
        if self.layer is None:
            return self.kind if self.seed is None else f"{self.kind} (seed {self.seed})"
        where = f"layer {self.layer}/{n_layers - 1}" if self.layer < n_layers else "all layers masked"
        return f"{self.kind} {where}"

    def units(self, plan: "Plan") -> float:
        """Progress units of the step: one unit = one candidate set evaluated over all samples."""
        if self.kind == "curve":
            return len(plan.layers)
        if self.kind == "baseline" or self.layer is None or self.layer > plan.layers[-1]:
            return 1
        screened = plan.prescreen is not None
        exact = plan.prescreen if screened else plan.n_heads
        return exact + (2 if screened else 0) + (self.kind == "conditioned")  # attribution: forward + backward


class Memo:
    """Results of finished steps (JSON-safe), saved after each step: a rerun replays them."""

    def __init__(self, done: dict | None = None, save: Callable[[dict], None] | None = None,
                 on_start: Callable[[Step, bool], None] | None = None,
                 on_step: Callable[[Step], None] | None = None):
        self.done = dict(done or {})
        self.save = save or (lambda done: None)
        self.on_start = on_start or (lambda step, replayed: None)
        self.on_step = on_step or (lambda step: None)
        self.replayed = 0

    def __call__(self, step: Step, fn: Callable[[], object]):
        key = str(step)
        replayed = key in self.done
        self.on_start(step, replayed)
        if replayed:
            self.replayed += 1
            return self.done[key]
        self.done[key] = fn()
        self.save(self.done)
        self.on_step(step)
        return self.done[key]


def candidates_bar(total: float, title: str, enabled: bool) -> tqdm:
    """A run's bar, in candidate sets evaluated over all samples (`Step.units`)."""
    return progress_bar(enabled, total=total, unit="cand", dynamic_ncols=True, desc=title,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total} cand [{elapsed}<{remaining}]")
