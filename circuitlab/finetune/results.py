"""What a fine-tuning run records (`result.json`): the training and the evaluation, typed. No torch: the
Table-1-style table and the studies read these files without a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object, write_json_atomic
from circuitlab.finetune.config import TrainConfig


@dataclass
class TrainRecord:
    split: str
    n_docs: int
    data_fingerprint: str | None = None
    steps: int = 0
    epochs: int | None = None
    steps_per_epoch: int | None = None
    loss_curve: list[float] = field(default_factory=list)  # per optimizer step: the batch's token-mean loss
    seconds: float = 0.0
    lr: dict | None = None
    eval_curve: list[dict] = field(default_factory=list)  # held-out loss: [{"step", "loss"}]
    best_step: int | None = None  # the checkpoint restored at the end (the lowest held-out loss)
    n_held_out: int = 0


@dataclass
class EvalRecord:
    split: str
    n_docs: int
    first_index: int
    data_fingerprint: str
    metrics: dict[str, float]
    pred_counts: list[int] = field(default_factory=list)  # how often each choice was predicted...
    gold_counts: list[int] = field(default_factory=list)  # ...and was gold: shows a model that learned the prior
    preds: list[int] = field(default_factory=list)
    seconds: float = 0.0
    golds: list[int] = field(default_factory=list)  # per document, so paired statistics need no data directory
    # per document: the gold choice's log-likelihood minus the best other choice's (> 0: right by `acc`);
    # none for exact_match tasks, which rank nothing (`circuitlab stats` reads both)
    margins: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    config: dict
    method: str
    model: dict
    heads: dict[str, list[int]] | None
    trainable_params: int
    base_params: int
    trainable_share_pct: float
    train: TrainRecord
    eval: EvalRecord
    circuit: dict | None = None  # where the heads came from: the circuit's task, strategy and path
    versions: dict = field(default_factory=dict)
    protocol: str = "paper"  # results are comparable only under the same protocol (runs before it: paper)
    circuit_lora: dict | None = None  # CircuitLoRA: the layer change, critical layers, ranks, LoRA parameters

    def save(self, path) -> Path:
        return write_json_atomic(path, asdict(self))

    @classmethod
    def from_dict(cls, d: dict, source: str = "result") -> "RunResult":
        try:
            known = {f.name for f in fields(cls)}
            d = {k: v for k, v in d.items() if k in known}
            return cls(**{**d, "train": _record(TrainRecord, d["train"]), "eval": _record(EvalRecord, d["eval"])})
        except (KeyError, TypeError, AttributeError) as e:
            raise CircuitlabError(f"{source} is not a circuitlab finetune result.json "
                                  f"({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path) -> "RunResult":
        return cls.from_dict(read_json_object(path, "run result"), str(path))


def _record(cls, d: dict):
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})


def made_from(doc: dict) -> dict | None:
    """A run's identity: the config its result records (fields added since it was made at their defaults)."""
    config = doc.get("config") if isinstance(doc, dict) else None
    return {**TrainConfig.defaults(), **config} if isinstance(config, dict) else None
