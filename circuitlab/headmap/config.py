"""HeadMap's configuration: which heads feed the map, where its output goes, and its size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from circuitlab.errors import CircuitlabError
from circuitlab.models.identity import ModelDims

VARIANTS = ("mha", "hs")


@dataclass
class HeadMapConfig:
    """What a HeadMap adapter is; enough to rebuild it around a model of the right shape.

    variant: "mha" adds the map's output to the attention block's output (paper Eq. 8), so the MLP
        reads it; "hs" adds it to the hidden state after the MLP (Eq. 7), so only later layers do.
    heads: layer -> query-head indices whose outputs (`hook_z`, the input of W_O) are mapped.
    rank: width r of the bottleneck Down (n*d_head -> r) / Up (r -> d_model).
    scaling: s in `s * Up(Down(z_sel))`. The paper's equations have no factor, i.e. s = 1, so that is
        the default; with Up initialised at zero a larger s only rescales Up's effective learning rate.
    seed: seeds Down's Kaiming-uniform initialisation.
    """

    variant: str = "mha"
    heads: dict[int, list[int]] = field(default_factory=dict)
    rank: int = 32
    scaling: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise CircuitlabError(f"unknown HeadMap variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if int(self.rank) < 1:
            raise CircuitlabError(f"HeadMap rank must be a positive integer, got {self.rank}")
        self.rank = int(self.rank)
        self.scaling = float(self.scaling)
        heads = {int(layer): sorted({int(h) for h in hs}) for layer, hs in self.heads.items()}
        self.heads = {layer: hs for layer, hs in sorted(heads.items()) if hs}
        if not self.heads:
            raise CircuitlabError("HeadMap needs at least one head")

    def check(self, dims: ModelDims) -> None:
        """Refuse heads that do not exist in a model of these dimensions."""
        dims.check_heads(self.heads, "HeadMap head")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["heads"] = {str(k): v for k, v in self.heads.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HeadMapConfig":
        try:
            return cls(
                variant=d["variant"],
                heads={int(k): list(v) for k, v in d["heads"].items()},
                rank=d.get("rank", 32),
                scaling=d.get("scaling", 1.0),
                seed=d.get("seed", 0),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CircuitlabError(f"malformed HeadMap config: {type(e).__name__}: {e}") from None
