"""What a model is: its dimensions, and whether two descriptions name the same weights.

One place answers "is this the same model?" for every artefact that belongs to one: a circuit (its
heads index this model's layers and heads, its losses come from these weights), a HeadMap adapter
(trained on these weights) and a set of circuits to compare. Dimensions must be equal; weights are
compared by an exact fingerprint, or, where both sides carry one, by a probe of sampled values that
tolerates a cast to another dtype (`circuitlab.models.fingerprint` takes both from the weights). Nothing
here imports torch: circuits and configs use it before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from circuitlab.core.errors import CircuitlabError

# The machine epsilon of each float dtype a probe can be read in (torch.finfo(dtype).eps).
EPS = {"float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float64": 2.0 ** -52}


@dataclass(frozen=True)
class ModelDims:
    """The dimensions circuits and adapters depend on; read from a HF config in one place."""

    n_layers: int
    n_heads: int  # query heads per layer: the unit of masking, also under GQA
    n_kv_heads: int
    d_head: int
    d_model: int

    @classmethod
    def of_config(cls, config) -> "ModelDims":
        """From a HF config object, or its config.json as a dict."""
        get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
        n_heads, d_model = get("num_attention_heads"), get("hidden_size")
        return cls(
            n_layers=get("num_hidden_layers"),
            n_heads=n_heads,
            n_kv_heads=get("num_key_value_heads") or n_heads,
            d_head=get("head_dim") or d_model // n_heads,
            d_model=d_model,
        )

    def __str__(self) -> str:
        return (f"{self.n_layers} layers x {self.n_heads} heads, {self.n_kv_heads} KV heads, "
                f"d_head {self.d_head}, d_model {self.d_model}")

    def check_heads(self, heads: Mapping[int, Iterable[int]], what: str = "head") -> None:
        """Refuse (layer, head) pairs that do not exist in a model of these dimensions."""
        for layer, hs in heads.items():
            hs = list(hs)
            bad = [h for h in hs if not 0 <= h < self.n_heads]
            if not 0 <= layer < self.n_layers or bad:
                raise CircuitlabError(f"{what} out of range: layer {layer} heads {bad or hs} "
                                      f"(the model has {self.n_layers} layers x {self.n_heads} heads)")


@dataclass(frozen=True)
class ModelIdentity:
    name: str | None
    dims: ModelDims
    fingerprint: str | None = None  # `weight_fingerprint`: exact
    probe: Mapping[str, list[float]] | None = None  # `weight_probe`: tolerant of dtype casts


def check_same_model(expected: ModelIdentity, actual: ModelIdentity, what: str, made: str = "made") -> None:
    """Raise one line when `actual` is not the model `what` was `made` on (dimensions, then weights)."""
    e, a = expected, actual
    if e.dims != a.dims:
        raise CircuitlabError(f"{what} was {made} on {e.name} ({e.dims}), not on {a.name} ({a.dims})")
    if e.probe and a.probe:
        differs = _first_difference(e.probe, a.probe)
        if differs:
            raise CircuitlabError(f"{what} was {made} on {e.name} (weight fingerprint {e.fingerprint}), "
                                  f"but the weights differ on {a.name} (first at {differs}); use the same base model")
    elif e.fingerprint and a.fingerprint and e.fingerprint != a.fingerprint:
        raise CircuitlabError(f"{what} was {made} on {e.name} with weight fingerprint {e.fingerprint}, but the "
                              f"weights of {a.name} have fingerprint {a.fingerprint}")


def _first_difference(want: Mapping[str, list], have: Mapping[str, list]) -> str | None:
    """The first probed matrix whose values differ by more than a dtype cast can explain."""
    common = sorted(k for k in set(want) & set(have) if not k.startswith("_"))
    if not common:
        raise CircuitlabError("no weights of this model could be compared with the base model's probe")
    # Casting fp32 weights to a smaller float moves each by at most half an ulp of that dtype: allow
    # one ulp of the coarser of the two sides' dtypes (probes without `_dtype` were read in fp32).
    eps = max(EPS[p.get("_dtype", ["float32"])[0]] for p in (want, have))
    for key in common:
        a, b = want[key], have[key]
        if len(a) != len(b) or any(abs(x - y) > eps * abs(x) + 1e-38 for x, y in zip(a, b)):
            return key
    return None


def count_params(params) -> int:
    """Elements of the distinct tensors among `params` (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in params}.values())
