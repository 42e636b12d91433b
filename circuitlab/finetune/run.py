"""One fine-tuning run = one directory: train a method, evaluate it, record everything; resumable.

`runs/NAME/`: `config.json` (what was asked), `circuit.json` (the heads used), `checkpoint/` (the HF
Trainer's `checkpoint-STEP/` directories: each a PEFT adapter directory plus optimizer, scheduler and
trainer state; one per epoch, the last kept, or every `--save-every K` steps, all kept), `adapter/` (the
trained adapter: PEFT's adapter_config.json + adapter_model.safetensors, and for HeadMap circuitlab's
headmap_config.json + adapter.safetensors), `result.json` (a `RunResult`). Rerunning the same command
resumes from the last checkpoint and gives the same result: the data order of every epoch is drawn
from the seed, nothing else is random, and Trainer restores the optimizer, scheduler and RNG state.

Training runs on the plain HF model (`circuitlab.finetune.plain`) through PEFT and the HF Trainer;
TransformerLens is imported only to locate a circuit when no `--circuit` is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from circuitlab.circuit import Circuit, ModelInfo
from circuitlab.errors import CircuitlabError, ConfigError
from circuitlab.finetune.circuit_lora import CircuitLoRAPlan, plan as circuit_lora_plan
from circuitlab.finetune.config import RunOptions, TrainConfig, check_run
from circuitlab.finetune.data import encode_docs, held_out_docs
from circuitlab.finetune.heads import choose_heads, heads_circuit, no_circuit
from circuitlab.finetune.plain import plain_of
from circuitlab.finetune.wrap import adapter_base, count_params, wrap
from circuitlab.io import read_json_object, write_json_atomic
from circuitlab.processes import launched_main
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


def check_run_dir(out: Path, cfg: TrainConfig) -> RunResult | None:
    """The finished result if this run is done; refuse a directory holding another run."""
    path = out / "config.json"
    if path.is_file():
        old = {**TrainConfig.defaults(), **read_json_object(path, "run config")}  # fields added since: defaults
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
    held_out_docs: list[Doc] = field(default_factory=list)  # the protocol's held-out data (official)
    circuit_lora: CircuitLoRAPlan | None = None  # CircuitLoRA's ranks, from its two edge circuits


def prepare(cfg: TrainConfig, data_dir=None, dims: ModelDims | None = None) -> RunInputs:
    """Load the docs and the circuit file; with the model's `dims`, check that the circuit fits them and
    that the heads can be chosen (so nothing fails after the model has loaded)."""
    task = get_task(cfg.task)
    eval_split = cfg.eval_split or task.eval_split
    loaded = load_docs(task, cfg.train_split, data_dir, limit=cfg.max_train) if cfg.method != "base" else []
    train_docs, held_out = held_out_docs(task, loaded, cfg, data_dir)
    eval_docs = _eval_docs(task, eval_split, data_dir, cfg, loaded)
    circuit = Circuit.load(cfg.circuit) if cfg.circuit is not None and cfg.variant is not None else None
    if circuit is not None:
        if dims is not None:
            circuit.validate(ModelIdentity(cfg.model, dims))
        choose_heads(circuit, cfg.heads, cfg.heads_per_layer, cfg.seed)  # the heads can be chosen
    elif cfg.variant is not None and dims is not None:
        _check_heads_per_layer(cfg, dims)
    lora_plan = circuit_lora_plan(cfg, dims) if cfg.method == "circuit-lora" else None
    return RunInputs(task, train_docs, eval_split, eval_docs, circuit, held_out, lora_plan)


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
    """The circuit HeadMap's heads come from: --circuit, else located now on the training docs (through a
    TransformerBridge over a second copy of the weights: locating reads and masks heads by hook names)."""
    from circuitlab.locate import LocateConfig, default_heads_per_layer, locate_to, locating_samples
    from circuitlab.models import load_model

    if cfg.variant is None:
        return None
    if inputs.circuit is not None:
        # May come from another task (transfer), never from a model of other dimensions. Its weight fingerprint
        # was taken on a TransformerBridge, whose state-dict names differ from the plain model's, so the
        # weights cannot be compared here without loading a bridge.
        inputs.circuit.validate(model, check_weights=False)
        return inputs.circuit
    if cfg.heads == "random":  # no need to locate anything
        return no_circuit(model, cfg.task, cfg.heads_per_layer or default_heads_per_layer(model.n_heads))
    # The paper's samples (64 correct, lowest target loss), drawn from the docs this run trains on.
    bridged = load_model(model.name, str(model.device), model.dtype_name, model.revision)
    protocol = {"protocol": cfg.protocol} if "protocol" in LocateConfig.__dataclass_fields__ else {}
    samples, task_info = locating_samples(bridged, inputs.task, data_dir, cfg.train_split, max_docs=cfg.max_train,
                                          progress=progress, docs=inputs.train_docs, **protocol)
    return locate_to(out / "located_circuit.json", bridged, samples,
                     LocateConfig(n_per_layer=cfg.heads_per_layer, **protocol), task_info, progress=progress,
                     reuse=True)


def train_and_eval(model, cfg: TrainConfig, out: str | Path, data_dir=None, progress: bool = True,
                   on_step=None, inputs: RunInputs | None = None, options: RunOptions | None = None) -> RunResult:
    """Train `cfg.method` on `model` (a `PlainModel`; a bridged `LoadedModel` is loaded again without its
    bridge) in place, evaluate it, write `out/result.json`; resumable.

    `inputs`: from `prepare`, when the caller checked them before loading the model. `on_step(step)` is
    called after every optimizer step (tests use it to interrupt a run). `options`: how to train (checkpoint
    interval, gradient checkpointing), which does not change the result.
    """
    from circuitlab.finetune.trainer import train

    out = Path(out)
    done = check_run_dir(out, cfg)
    if done is not None:
        return done
    model = plain_of(model)
    check_run(cfg, options or RunOptions(), model.device)
    inputs = inputs or prepare(cfg, data_dir, model.dims)
    task, train_docs, eval_docs = inputs.task, inputs.train_docs, inputs.eval_docs
    circuit = resolve_circuit(model, cfg, inputs, out, data_dir, progress)
    heads = choose_heads(circuit, cfg.heads, cfg.heads_per_layer, cfg.seed) if circuit is not None else None
    main = launched_main()  # under torchrun, one process writes the files
    if main:
        write_json_atomic(out / "config.json", cfg.to_dict())  # only once the inputs proved good
        if heads is not None:
            heads_circuit(circuit, heads, cfg.heads, cfg.seed).save(out / "circuit.json")
    model_info = ModelInfo.of(model)  # before PEFT renames the modules it wraps
    record = TrainRecord(cfg.train_split, len(train_docs), data_fingerprint(train_docs) if train_docs else None)
    trainable, base_params = 0, count_params(model.hf_model.parameters())
    lora_record = inputs.circuit_lora.record(model.hf_model) if inputs.circuit_lora else None  # before PEFT wraps
    if cfg.method != "base":
        base = adapter_base(model, model_info.fingerprint)
        plan = inputs.circuit_lora
        wrapped = wrap(model, cfg, heads, plan.lora_config(model.hf_model) if plan else None)
        eos = cfg.rules.train_eos
        seqs = [encode_docs(model.tokenizer, d, cfg.max_len, eos) for d in (train_docs, inputs.held_out_docs)]
        record = TrainRecord(record.split, record.n_docs, record.data_fingerprint,
                             **train(model, wrapped, cfg, *seqs, out / "checkpoint", options, progress, on_step))
        if main:
            wrapped.save(out / "adapter", base, {"method": cfg.method, "task": cfg.task,
                                                 "trained_by": "circuitlab finetune", "protocol": cfg.protocol})
        trainable = wrapped.n_trainable
    ev = evaluate_docs(model, task, eval_docs, inputs.eval_split, progress)
    result = RunResult(
        config=cfg.to_dict(), method=cfg.method, model=asdict(model_info),
        heads={str(k): v for k, v in heads.items()} if heads else None,
        circuit=None if circuit is None else {"task": circuit.task.name, "strategy": circuit.strategy,
                                              "n_per_layer": circuit.n_per_layer, "path": cfg.circuit},
        trainable_params=trainable, base_params=base_params, trainable_share_pct=100.0 * trainable / base_params,
        train=record, eval=ev, versions=package_versions(), protocol=cfg.protocol, circuit_lora=lora_record,
    )
    if main:
        result.save(out / "result.json")
    return result


def _eval_docs(task, split: str, data_dir, cfg: TrainConfig, train_docs: list[Doc]) -> list[Doc]:
    """The evaluation docs; when training used the same split, the docs after the training ones (and
    after those held out of them)."""
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
