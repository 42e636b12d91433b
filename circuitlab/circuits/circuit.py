"""A located knowledge circuit and its versioned JSON form (schema 2).

The JSON keeps everything needed to trust and reuse a circuit: which model (with a fingerprint of
its weights) and which data it came from, the samples, the strategy, the heads, the numbers behind
the choice (score tables, loss curves, baseline loss), the other selections located beside it for
comparison (greedy, random seeds), Figure 7's all-documents curve, and how it was run. Schema-1
files (written before these had fields of their own) load through `circuitlab.circuits.v1`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.circuits.heads import HeadMask
from circuitlab.core.io import nan_to_null, null_to_nan, read_json_object, write_json_atomic
from circuitlab.models.identity import ModelDims, ModelIdentity, check_same_model
from circuitlab.models.names import public_name

SCHEMA_VERSION = 2
Heads = dict[int, list[int]]  # layer -> sorted query-head indices


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
        return cls(public_name(model.name), model.hf_id, model.revision, model.fingerprint(), **asdict(model.dims))

    @property
    def dims(self) -> ModelDims:
        return ModelDims(self.n_layers, self.n_heads, self.n_kv_heads, self.d_head, self.d_model)

    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.dims, self.fingerprint)


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
    # A prompt of the prompt's token length that should not give the target: the run the `corrupted`
    # ablation patches a masked head's z from. Written to JSON only when present.
    corrupted: str | None = None


def sample_dict(s: Sample) -> dict:
    """A sample as JSON: `corrupted` only when it has one, so samples without one (every circuit
    located before it existed) are written, and fingerprinted, exactly as before."""
    d = asdict(s)
    if d.get("corrupted", "") is None:
        del d["corrupted"]
    return d


@dataclass
class Selection:
    """Another selection of heads located beside the circuit, to compare with it."""

    strategy: str
    heads: Heads
    loss_curve: list[float]  # loss with the selection's heads of layers first..k masked
    seed: int | None = None

    @property
    def label(self) -> str:
        return self.strategy if self.seed is None else f"{self.strategy} (seed {self.seed})"


@dataclass
class AllDocsCurve:
    """Figure 7: the circuit's masks on many documents of the split, right or wrong."""

    n_docs: int
    split: str
    baseline_loss: float | None
    loss_curve: list[float]


@dataclass
class ExcludedCircuit:
    """`redundant`: the circuit whose heads were never drawn."""

    strategy: str
    heads: Heads


@dataclass
class LocateRun:
    """How the circuit was located; `settings` fingerprints everything that decides the result."""

    evaluator: str = "engine"  # "engine" or "plain"
    layers: list[int] | None = None  # first and last layer located
    max_batch_tokens: int | None = None
    prescreen: int | None = None
    seeds: list[int] = field(default_factory=list)
    resumed_steps: int = 0
    engine_flops: float | None = None
    settings: str | None = None
    processes: int = 1  # how many processes shared the work (torchrun)
    reproduce: dict | None = None  # `circuitlab reproduce`'s settings, for the circuits it merges
    made_from: dict | None = None  # the identity it was located with (`circuitlab.locate.run.run_identity`)


@dataclass
class Circuit:
    model: ModelInfo
    task: TaskInfo
    samples: list[Sample]
    strategy: str
    n_per_layer: int
    heads: Heads
    seed: int | None = None
    selected_by: str | None = None  # the score table whose top n per layer are the heads
    baseline_loss: float | None = None
    loss_curve: list[float] = field(default_factory=list)  # loss with the heads of layers first..k masked
    scores: dict[str, list[list[float]]] = field(default_factory=dict)  # name -> L x H table, NaN = not evaluated
    selections: list[Selection] = field(default_factory=list)
    all_docs: AllDocsCurve | None = None
    excluded: ExcludedCircuit | None = None
    run: LocateRun | None = None
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    protocol: str = "paper"  # `circuitlab.core.protocol`: the paper's text or the official code's (absent = paper)
    # What a masked head's z became (`circuitlab.locate.ablation`): zero, mean or corrupted; written
    # only when not zero, so a file without it (every file made before it existed) means zero.
    ablation: str = "zero"
    reference: list[Sample] = field(default_factory=list)  # mean: the docs its mean z came from (absent = none)
    schema_version: int = SCHEMA_VERSION
    source: Path | None = field(default=None, compare=False, repr=False)  # the file it was saved to or read from

    @property
    def head_list(self) -> list[tuple[int, int]]:
        return HeadMask.of(self.heads).pairs()

    @property
    def mask(self) -> HeadMask:
        return HeadMask.of(self.heads)

    @property
    def label(self) -> str:
        """The circuit's own selection, named as its `Selection`s are."""
        return self.strategy if self.seed is None else f"{self.strategy} (seed {self.seed})"

    # -- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["source"]
        d["samples"] = [sample_dict(s) for s in self.samples]
        d["reference"] = [sample_dict(s) for s in self.reference]
        for key, default in (("ablation", "zero"), ("reference", [])):
            if d[key] == default:
                del d[key]
        d["heads"] = _heads_json(self.heads)
        d["head_list"] = [list(x) for x in self.head_list]
        for s in d["selections"]:
            s["heads"] = _heads_json(s["heads"])
        if d["excluded"]:
            d["excluded"]["heads"] = _heads_json(d["excluded"]["heads"])
        return nan_to_null(d)

    def save(self, path: str | Path) -> Path:
        self.source = write_json_atomic(path, self.to_dict())
        return self.source

    @classmethod
    def from_dict(cls, d: dict, source: str = "circuit") -> "Circuit":
        if not isinstance(d, dict):
            raise CircuitlabError(f"malformed circuit {source}: expected a JSON object")
        version = d.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise CircuitlabError(f"malformed circuit {source}: no schema_version")
        if version > SCHEMA_VERSION:
            raise CircuitlabError(f"circuit {source} has schema version {version}, newer than this circuitlab "
                                  f"understands ({SCHEMA_VERSION}); upgrade circuitlab")
        try:
            if version < 2:
                from circuitlab.circuits.v1 import upgrade

                d = upgrade(d)
            c = cls(
                model=ModelInfo(**d["model"]),
                task=TaskInfo(**d["task"]),
                samples=[Sample(**s) for s in d["samples"]],
                strategy=str(d["strategy"]),
                n_per_layer=int(d["n_per_layer"]),
                heads=_heads(d["heads"]),
                seed=d.get("seed"),
                selected_by=d.get("selected_by"),
                baseline_loss=d.get("baseline_loss"),
                loss_curve=null_to_nan(d.get("loss_curve") or []),
                scores={k: [null_to_nan(row) for row in t] for k, t in (d.get("scores") or {}).items()},
                selections=[Selection(s["strategy"], _heads(s["heads"]), null_to_nan(s["loss_curve"]), s.get("seed"))
                            for s in d.get("selections") or []],
                all_docs=AllDocsCurve(**{**d["all_docs"], "loss_curve": null_to_nan(d["all_docs"]["loss_curve"])})
                if d.get("all_docs") else None,
                excluded=ExcludedCircuit(d["excluded"]["strategy"], _heads(d["excluded"]["heads"]))
                if d.get("excluded") else None,
                run=LocateRun(**d["run"]) if d.get("run") else None,
                timings=dict(d.get("timings") or {}),
                versions=dict(d.get("versions") or {}),
                protocol=str(d.get("protocol") or "paper"),
                ablation=str(d.get("ablation") or "zero"),
                reference=[Sample(**s) for s in d.get("reference") or []],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CircuitlabError(f"malformed circuit {source}: {type(e).__name__}: {e}") from None
        c.model.dims.check_heads(c.heads, f"circuit {source}: head")
        return c

    @classmethod
    def load(cls, path: str | Path) -> "Circuit":
        if Path(path).suffix == ".pt":  # the official code's info.pt names no model: converting it needs one
            raise CircuitlabError(f"{path} is a torch file, not a circuit JSON; convert the official code's info.pt "
                                  f"with `circuitlab official-import {path} --model MODEL --out CIRCUIT.json`")
        circuit = cls.from_dict(read_json_object(path, "circuit file"), source=str(path))
        circuit.source = Path(path)
        return circuit

    # -- belonging to a model --------------------------------------------------------------------

    def validate(self, model, check_weights: bool = True) -> None:
        """Refuse to apply this circuit to a model it was not located on (`model`: a LoadedModel,
        a ModelInfo or a ModelIdentity)."""
        theirs = model if isinstance(model, ModelIdentity) else model.identity()
        if not check_weights:
            theirs = ModelIdentity(theirs.name, theirs.dims)
        check_same_model(self.model.identity(), theirs, "circuit", made="located")


def _heads(d: dict) -> Heads:
    """{layer: [heads]} from JSON, strictly: a head is an integer (1.5 is not head 1) listed once (a head listed
    twice would be trained twice and exported twice), and a layer is an integer."""
    heads = {}
    for k, v in d.items():
        if isinstance(k, bool) or not str(k).lstrip("-").isdigit():
            raise ValueError(f"layer {k!r} is not an integer")
        if not isinstance(v, list) or any(isinstance(h, bool) or not isinstance(h, int) for h in v):
            raise ValueError(f"layer {k}: heads {v!r} are not a list of integers")
        twice = sorted({h for h in v if v.count(h) > 1})
        if twice:
            raise ValueError(f"layer {k} lists head{'s' if len(twice) > 1 else ''} "
                             f"{', '.join(map(str, twice))} more than once")
        heads[int(k)] = sorted(v)
    return heads


def _heads_json(heads: Heads) -> dict[str, list[int]]:
    return {str(k): sorted(v) for k, v in sorted(heads.items())}
