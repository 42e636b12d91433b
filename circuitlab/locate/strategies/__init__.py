"""The locating strategies: one file per algorithm, one signature, one registry (`REGISTRY`).

To add one: a file here with `locate(ev, plan, memo) -> Located` and `steps(plan)`, ending in
`register(Strategy(...))`, and its import below. The CLI's choices, the config's check, the
progress bar and the figures all read the registry.
"""

from circuitlab.locate.strategies.base import REGISTRY, Evaluator, Located, Strategy, get_strategy, register
# Registration, in the order the CLI lists them: the paper's algorithm first.
from circuitlab.locate.strategies import layer_conditioned  # noqa: E402,F401  isort: skip
from circuitlab.locate.strategies import greedy  # noqa: E402,F401  isort: skip
from circuitlab.locate.strategies import random  # noqa: E402,F401  isort: skip

STRATEGY_NAMES: tuple[str, ...] = tuple(REGISTRY)

__all__ = ["REGISTRY", "STRATEGY_NAMES", "Evaluator", "Located", "Strategy", "get_strategy", "register"]
