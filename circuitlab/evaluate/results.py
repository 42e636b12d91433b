"""An evaluation's result, typed, written and read back without torch: `eval --out` reuses a finished result (and
refuses one made otherwise) before any model loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object, write_json_atomic
from circuitlab.core.protocol import DEFAULT_PROTOCOL


@dataclass
class Prediction:
    index: int
    gold: int
    pred: int  # exact_match tasks: 0 when the generated answer is the gold one, else -1 (none of the choices)
    pred_norm: int
    logprobs: list[float]  # exact_match tasks: none (nothing is ranked)
    generated: str | None = None  # exact_match tasks: the greedy continuation (circuitlab.evaluate.generation)


@dataclass
class EvalResult:
    model: str
    task: str
    split: str
    n_docs: int
    metrics: dict[str, float]
    data_fingerprint: str
    seconds: float
    predictions: list[Prediction] = field(default_factory=list)
    protocol: str = DEFAULT_PROTOCOL  # results are comparable only when their protocols match
    adapter: dict | None = None  # the adapter it ran with: kind, name, fingerprint (`headmap.dirs.AdapterDir.record`)
    made_from: dict | None = None  # its identity (`evaluate.job.eval_identity`): what a rerun must match to reuse it

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        d = read_json_object(path, "evaluation result")
        try:
            known = {f.name for f in fields(cls)}
            kept = {k: v for k, v in d.items() if k in known}
            preds = [Prediction(**{k: v for k, v in p.items() if k in _PREDICTION}) for p in d.get("predictions", [])]
            return cls(**{**kept, "predictions": preds})
        except (TypeError, AttributeError) as e:
            raise CircuitlabError(f"{path} is not a circuitlab evaluation result ({type(e).__name__}: {e})") from None


_PREDICTION = {f.name for f in fields(Prediction)}
