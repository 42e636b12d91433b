"""A locating run resolved against a model's dimensions: what the strategies read (`LocateConfig.plan` makes it)."""

from __future__ import annotations

from dataclasses import dataclass

from circuitlab.circuits.heads import HeadMask


@dataclass(frozen=True)
class Plan:
    """A `LocateConfig` resolved against a model: what the strategies read."""

    layers: list[int]
    n_heads: int
    n: int
    prescreen: int | None  # K < n_heads, or None: every head evaluated exactly
    seeds: tuple[int, ...]
    exclude: HeadMask  # heads never drawn (redundant)
