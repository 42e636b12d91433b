"""Sets of attention heads: the value type every part of circuitlab passes around, and the two ways
a set is chosen without a model (the top n of a score row, n random heads per layer)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from circuitlab.core.errors import CircuitlabError


@dataclass(frozen=True)
class HeadMask:
    """A set of (layer, query head) pairs; immutable and hashable, layers and heads kept sorted."""

    heads: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @classmethod
    def of(cls, heads: Mapping[int, Iterable[int]] | None = None) -> "HeadMask":
        items = ((int(layer), tuple(sorted({int(h) for h in hs}))) for layer, hs in (heads or {}).items())
        return cls(tuple(sorted((layer, hs) for layer, hs in items if hs)))

    def as_dict(self) -> dict[int, list[int]]:
        return {layer: list(hs) for layer, hs in self.heads}

    def at(self, layer: int) -> tuple[int, ...]:
        return dict(self.heads).get(layer, ())

    @property
    def layers(self) -> list[int]:
        return [layer for layer, _ in self.heads]

    def pairs(self) -> list[tuple[int, int]]:
        return [(layer, h) for layer, hs in self.heads for h in hs]

    def before(self, layer: int) -> "HeadMask":
        """Only the heads of layers < `layer`."""
        return HeadMask(tuple((la, hs) for la, hs in self.heads if la < layer))

    def plus(self, layer: int, heads: Iterable[int]) -> "HeadMask":
        d = self.as_dict()
        d[layer] = [*d.get(layer, []), *heads]
        return HeadMask.of(d)

    def __len__(self) -> int:
        return sum(len(hs) for _, hs in self.heads)


def top_heads(row: Sequence[float], n: int) -> list[int]:
    """The n heads with the highest score (ties: lower index); NaN (not evaluated) never chosen."""
    evaluated = [h for h, x in enumerate(row) if not math.isnan(x)]
    return sorted(sorted(evaluated, key=lambda h: (-row[h], h))[:n])


def bottom_heads(row: Sequence[float], n: int) -> list[int]:
    """The n heads with the lowest score (ties: lower index), NaN never chosen: the heads whose masking
    hurts least, the "anti-circuit" a control arm trains instead of the circuit's top n."""
    evaluated = [h for h, x in enumerate(row) if not math.isnan(x)]
    return sorted(sorted(evaluated, key=lambda h: (row[h], h))[:n])


def random_heads(seed: int, layers: Sequence[int], n_heads: int, n: int, exclude: HeadMask = HeadMask()) -> HeadMask:
    """n heads per layer drawn with `random.Random(seed)`, layer by layer in order, never from
    `exclude`: the one sampler behind `locate --strategy random|redundant` and `finetune --heads`."""
    rng = random.Random(seed)
    chosen = {}
    for layer in layers:
        pool = [h for h in range(n_heads) if h not in exclude.at(layer)]
        if len(pool) < n:
            where = " outside the circuit" if exclude.at(layer) else ""
            raise CircuitlabError(f"layer {layer} has only {len(pool)} heads{where}, fewer than n={n}")
        chosen[layer] = rng.sample(pool, n)
    return HeadMask.of(chosen)


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B|; two empty sets are the same set (1)."""
    return len(a & b) / len(a | b) if a | b else 1.0
