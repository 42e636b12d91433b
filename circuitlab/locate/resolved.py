"""A locating run resolved once: the one object the light half hands the heavy half.

It carries values, never names: the `Protocol` object (not its name), the `Plan` (the config checked against the
model's dimensions) and the loaded model's `ModelInfo`, whose weights fingerprint is hashed once per run (hashing
reads every parameter: a 7B model's takes seconds, and each part of a run that asked again paid it again).
`locate_task` resolves the protocol and the plan before the model loads, so that a bad config is refused without
the weights, and adds the model once it has loaded (`loaded`); `locate` and `locate_to`, called with a config,
resolve it at their entrance (`of`). Everything below them (samples, score cache, identity, ablation, evaluators)
reads the run's fields and resolves nothing again. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from circuitlab.circuits.circuit import ModelInfo, Sample
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.protocol import Protocol, get_protocol
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.plan import Plan
from circuitlab.models.identity import ModelDims, ModelIdentity


@dataclass(frozen=True)
class ResolvedRun:
    """A `LocateConfig` with its protocol, its plan and (once loaded) the model's identity, each resolved once."""

    config: LocateConfig
    protocol: Protocol
    plan: Plan
    dims: ModelDims  # what the plan was checked against
    model: ModelInfo | None = None  # the loaded model, its weights hashed once; None before it loads

    @classmethod
    def before_load(cls, config: LocateConfig, dims: ModelDims, name: str | None = None) -> ResolvedRun:
        """The light half: the protocol by its name and the plan against the dimensions of the model's config file
        (`redundant`'s circuit against those dimensions; its weights are checked in `loaded`)."""
        return cls(config, get_protocol(config.protocol), config.plan(dims, ModelIdentity(name, dims)), dims)

    @classmethod
    def of(cls, model, config: LocateConfig | ResolvedRun | None) -> ResolvedRun:
        """`config` resolved against the loaded `model` at once; a run resolved already, as it is."""
        if isinstance(config, cls):
            return config
        config = config or LocateConfig()
        info = ModelInfo.of(model)
        return cls(config, get_protocol(config.protocol), config.plan(info.dims, info.identity()), info.dims, info)

    def loaded(self, model) -> ResolvedRun:
        """The run on `model`, now loaded: its weights hashed (the one time in the run), its dimensions those the
        plan was checked against, and `redundant`'s circuit checked against its weights as well."""
        info = ModelInfo.of(model)
        if info.dims != self.dims:
            raise CircuitlabError(f"{info.name} loaded as {info.dims}, but its config file says {self.dims}")
        self.config.excluded(info.identity())
        return replace(self, model=info)

    def with_reference(self, reference: list[Sample]) -> ResolvedRun:
        """`mean`: the reference docs, known once the samples are (the docs of the split that are not samples)."""
        return replace(self, config=replace(self.config, reference=reference))
