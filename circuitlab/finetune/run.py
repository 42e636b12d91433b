"""One fine-tuning run = one directory: train a method, evaluate it, record everything; resumable.

`runs/NAME/`: `config.json` (what was asked), `circuit.json` (the heads used), `checkpoint/`
(trainable tensors, optimizer state and progress after every epoch), `adapter/` (the trained
HeadMap adapter, for `circuitlab.headmap.attach`), `result.json` (a `RunResult`). Rerunning the same
command resumes from the last checkpoint and gives the same result: the data order of every epoch
is drawn from the seed, nothing else is random, and optimizer and scheduler state are restored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from circuitlab.circuit import Circuit, ModelInfo
from circuitlab.errors import CircuitlabError, ConfigError
from circuitlab.finetune.adapters import build_adapters
from circuitlab.finetune.config import TrainConfig
from circuitlab.finetune.heads import choose_heads, heads_circuit, no_circuit
from circuitlab.finetune.loop import train
from circuitlab.headmap import base_info, save_adapter
from circuitlab.io import read_json_object, write_json_atomic
from circuitlab.models.identity import ModelDims, ModelIdentity
from circuitlab.provenance import package_versions
from circuitlab.tasks import Doc, Task, data_fingerprint, get_task, load_docs


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


def check_run_dir(out: Path, cfg: TrainConfig) -> RunResult | None:
    """The finished result if this run is done; refuse a directory holding another run."""
    path = out / "config.json"
    if path.is_file():
        old = read_json_object(path, "run config")
        if old != cfg.to_dict():
            diff = sorted(k for k in set(old) | set(cfg.to_dict()) if old.get(k) != cfg.to_dict().get(k))
            raise CircuitlabError(f"{out} holds a run with another config (differs in: {', '.join(diff)}); "
                                  "choose another --out or delete that directory")
    if (out / "result.json").is_file():
        return RunResult.load(out / "result.json")
    return None


@dataclass
class RunInputs:
    """A run's inputs, read and checked before any model is loaded."""

    task: Task
    train_docs: list[Doc]
    eval_split: str
    eval_docs: list[Doc]
    circuit: Circuit | None  # the --circuit file (its weights are checked once the model is loaded)


def prepare(cfg: TrainConfig, data_dir=None, dims: ModelDims | None = None) -> RunInputs:
    """Load the docs and the circuit file; with the model's `dims`, check that the circuit fits them and
    that the heads can be chosen (so nothing fails after the model has loaded)."""
    task = get_task(cfg.task)
    eval_split = cfg.eval_split or task.eval_split
    train_docs = load_docs(task, cfg.train_split, data_dir, limit=cfg.max_train) if cfg.method != "base" else []
    eval_docs = _eval_docs(task, eval_split, data_dir, cfg, train_docs)
    circuit = Circuit.load(cfg.circuit) if cfg.circuit is not None and cfg.variant is not None else None
    if circuit is not None:
        if dims is not None:
            circuit.validate(ModelIdentity(cfg.model, dims))
        choose_heads(circuit, cfg.heads, cfg.heads_per_layer, cfg.seed)  # the heads can be chosen
    elif cfg.variant is not None and dims is not None:
        _check_heads_per_layer(cfg, dims)
    return RunInputs(task, train_docs, eval_split, eval_docs, circuit)


def _check_heads_per_layer(cfg: TrainConfig, dims: ModelDims) -> None:
    """Without a circuit file: n heads per layer must exist, and `redundant` must find n outside the n
    that the circuit it locates first will hold."""
    from circuitlab.locate import default_heads_per_layer

    n = cfg.heads_per_layer or default_heads_per_layer(dims.n_heads)
    needed = 2 * n if cfg.heads == "redundant" else n
    if needed > dims.n_heads:
        what = f"2 x {n} (a circuit's and as many outside it)" if cfg.heads == "redundant" else str(n)
        raise ConfigError("heads_per_layer", f"{n} needs {what} heads per layer; the model has {dims.n_heads}")


def resolve_circuit(model, cfg: TrainConfig, inputs: RunInputs, out: Path, data_dir=None,
                    progress: bool = True) -> Circuit | None:
    """The circuit HeadMap's heads come from: --circuit, else located now on the training docs."""
    from circuitlab.locate import LocateConfig, default_heads_per_layer, locate_to, locating_samples

    if cfg.variant is None:
        return None
    if inputs.circuit is not None:
        inputs.circuit.validate(model)  # may come from another task (transfer), never from another model
        return inputs.circuit
    if cfg.heads == "random":  # no need to locate anything
        return no_circuit(model, cfg.task, cfg.heads_per_layer or default_heads_per_layer(model.n_heads))
    # The paper's samples (64 correct, lowest target loss), drawn from the docs this run trains on.
    samples, task_info = locating_samples(model, inputs.task, data_dir, cfg.train_split,
                                          max_docs=cfg.max_train, progress=progress, docs=inputs.train_docs)
    return locate_to(out / "located_circuit.json", model, samples, LocateConfig(n_per_layer=cfg.heads_per_layer),
                     task_info, progress=progress, reuse=True)


def train_and_eval(model, cfg: TrainConfig, out: str | Path, data_dir=None, progress: bool = True,
                   on_step=None, inputs: RunInputs | None = None) -> RunResult:
    """Train `cfg.method` on `model` (in place), evaluate it, write `out/result.json`; resumable.

    `inputs`: from `prepare`, when the caller checked them before loading the model. `on_step(step)`
    is called after every optimizer step (tests use it to interrupt a run).
    """
    out = Path(out)
    done = check_run_dir(out, cfg)
    if done is not None:
        return done
    inputs = inputs or prepare(cfg, data_dir, model.dims)
    task, train_docs, eval_docs = inputs.task, inputs.train_docs, inputs.eval_docs
    circuit = resolve_circuit(model, cfg, inputs, out, data_dir, progress)
    heads = choose_heads(circuit, cfg.heads, cfg.heads_per_layer, cfg.seed) if circuit is not None else None
    write_json_atomic(out / "config.json", cfg.to_dict())  # only once the inputs proved good
    if heads is not None:
        heads_circuit(circuit, heads, cfg.heads, cfg.seed).save(out / "circuit.json")
    model_info = ModelInfo.of(model)
    adapters = build_adapters(model, cfg, heads)

    record = TrainRecord(cfg.train_split, len(train_docs), data_fingerprint(train_docs) if train_docs else None)
    if cfg.method != "base":
        record = TrainRecord(record.split, record.n_docs, record.data_fingerprint,
                             **train(model, cfg, adapters, train_docs, out / "checkpoint", progress, on_step))
    if adapters.headmap is not None:
        base = base_info(model.hf_model, model.name, model.hf_id, model_info.fingerprint)
        save_adapter(adapters.headmap, out / "adapter", base,
                     extra={"method": cfg.method, "task": cfg.task, "trained_by": "circuitlab finetune"})
    with adapters.active(model):
        ev = evaluate_docs(model, task, eval_docs, inputs.eval_split, progress)
    result = RunResult(
        config=cfg.to_dict(), method=cfg.method, model=asdict(model_info),
        heads={str(k): v for k, v in heads.items()} if heads else None,
        circuit=None if circuit is None else {"task": circuit.task.name, "strategy": circuit.strategy,
                                              "n_per_layer": circuit.n_per_layer, "path": cfg.circuit},
        trainable_params=adapters.n_trainable, base_params=adapters.base_params,
        trainable_share_pct=adapters.share, train=record, eval=ev, versions=package_versions(),
    )
    result.save(out / "result.json")
    return result


def _eval_docs(task, split: str, data_dir, cfg: TrainConfig, train_docs: list[Doc]) -> list[Doc]:
    """The evaluation docs; when training used the same split, the docs after the training ones."""
    docs = load_docs(task, split, data_dir)
    if split == cfg.train_split:
        used = {d.index for d in train_docs} if cfg.method != "base" else set(range(cfg.max_train or 0))
        docs = [d for d in docs if d.index not in used]
    docs = docs[: cfg.eval_limit] if cfg.eval_limit else docs
    if not docs:
        raise CircuitlabError(f"no {task.name} {split} documents left to evaluate on")
    return docs


def evaluate_docs(model, task, docs: list[Doc], split: str, progress: bool) -> EvalRecord:
    """`evaluate.evaluate` on these docs, with how often each choice was predicted and was gold."""
    from circuitlab.evaluate import evaluate

    result = evaluate(model, task, split=split, progress=progress, docs=docs)
    preds, golds = [p.pred for p in result.predictions], [p.gold for p in result.predictions]
    n_choices = max(len(d.choices) for d in docs)
    return EvalRecord(split, result.n_docs, docs[0].index, result.data_fingerprint, result.metrics,
                      pred_counts=[preds.count(i) for i in range(n_choices)],
                      gold_counts=[golds.count(i) for i in range(n_choices)], preds=preds, seconds=result.seconds)
