"""A located knowledge circuit and its versioned JSON form.

The JSON keeps everything needed to trust and reuse a circuit: which model (with a fingerprint of
its weights) and which data it came from, the samples, the strategy, the heads, and the numbers
behind the choice (score tables, loss curves, baseline loss).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from circuitlab.errors import CircuitlabError
from circuitlab.io import read_json, write_json_atomic

SCHEMA_VERSION = 1


@dataclass
class ModelInfo:
    name: str
    hf_id: str
    revision: str | None
    fingerprint: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int

    @classmethod
    def of(cls, model) -> "ModelInfo":
        """From a `circuitlab.models.LoadedModel`."""
        return cls(
            name=model.name,
            hf_id=model.hf_id,
            revision=model.revision,
            fingerprint=model.fingerprint(),
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            n_kv_heads=model.n_kv_heads,
            d_head=model.d_head,
            d_model=model.d_model,
        )


@dataclass
class TaskInfo:
    name: str
    split: str
    data_fingerprint: str | None = None
    n_docs_scored: int | None = None


@dataclass
class Sample:
    prompt: str
    target: str
    index: int | None = None  # row in the training split, when known


@dataclass
class Circuit:
    model: ModelInfo
    task: TaskInfo
    samples: list[Sample]
    strategy: str
    n_per_layer: int
    heads: dict[int, list[int]]  # layer -> sorted query-head indices
    seed: int | None = None
    baseline_loss: float | None = None
    loss_curve: list[float] = field(default_factory=list)  # loss with the heads of layers 0..k masked
    scores: dict[str, list[list[float | None]]] = field(default_factory=dict)  # name -> L x H table
    curves: dict[str, list[float]] = field(default_factory=dict)  # other selections' loss curves
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def head_list(self) -> list[tuple[int, int]]:
        return [(layer, h) for layer in sorted(self.heads) for h in sorted(self.heads[layer])]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["heads"] = {str(k): sorted(v) for k, v in sorted(self.heads.items())}
        d["head_list"] = [list(x) for x in self.head_list]
        d["scores"] = {k: [[_finite(x) for x in row] for row in t] for k, t in self.scores.items()}
        return d

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, source: str = "circuit") -> "Circuit":
        if not isinstance(d, dict):
            raise CircuitlabError(f"malformed circuit {source}: expected a JSON object")
        version = d.get("schema_version")
        if not isinstance(version, int):
            raise CircuitlabError(f"malformed circuit {source}: no schema_version")
        if version > SCHEMA_VERSION:
            raise CircuitlabError(
                f"circuit {source} has schema version {version}, newer than this circuitlab "
                f"understands ({SCHEMA_VERSION}); upgrade circuitlab"
            )
        try:
            c = cls(
                model=ModelInfo(**d["model"]),
                task=TaskInfo(**d["task"]),
                samples=[Sample(**s) for s in d["samples"]],
                strategy=d["strategy"],
                n_per_layer=int(d["n_per_layer"]),
                heads={int(k): [int(h) for h in v] for k, v in d["heads"].items()},
                seed=d.get("seed"),
                baseline_loss=d.get("baseline_loss"),
                loss_curve=list(d.get("loss_curve", [])),
                scores={k: [[_nan(x) for x in row] for row in t] for k, t in d.get("scores", {}).items()},
                curves=dict(d.get("curves", {})),
                timings=dict(d.get("timings", {})),
                versions=dict(d.get("versions", {})),
                extra=dict(d.get("extra", {})),
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CircuitlabError(f"malformed circuit {source}: {type(e).__name__}: {e}") from None
        c.check_heads()
        return c

    @classmethod
    def load(cls, path: str | Path) -> "Circuit":
        return cls.from_dict(read_json(path, "circuit file"), source=str(path))

    def check_heads(self) -> None:
        n_layers, n_heads = self.model.n_layers, self.model.n_heads
        for layer, hs in self.heads.items():
            bad = [h for h in hs if not 0 <= h < n_heads]
            if not 0 <= layer < n_layers or bad:
                raise CircuitlabError(
                    f"circuit head out of range: layer {layer} heads {bad or hs} "
                    f"(model has {n_layers} layers x {n_heads} heads)"
                )

    def validate(self, model, check_weights: bool = True) -> None:
        """Refuse to apply this circuit to a model it was not located on."""
        mine, theirs = self.model, ModelInfo.of(model) if not isinstance(model, ModelInfo) else model
        dims = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")
        if any(getattr(mine, k) != getattr(theirs, k) for k in dims):
            have = "x".join(str(getattr(theirs, k)) for k in dims[:2])
            want = "x".join(str(getattr(mine, k)) for k in dims[:2])
            raise CircuitlabError(
                f"circuit was located on {mine.name} ({want} layers x heads), "
                f"not on {theirs.name} ({have})"
            )
        if check_weights and mine.fingerprint != theirs.fingerprint:
            raise CircuitlabError(
                f"circuit was located on {mine.name} with weight fingerprint {mine.fingerprint}, "
                f"but this model's weights have fingerprint {theirs.fingerprint}"
            )


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _nan(x):
    return math.nan if x is None else float(x)
