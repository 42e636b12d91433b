"""A fine-tuning run, one library call: `finetune(model, config, out)`.

    prepare (docs, circuit file, CircuitLoRA's ranks: before any model loads) -> the circuit (given, or located
    on the training docs) -> its heads -> the method as one PEFT adapter -> train (the HF Trainer) -> evaluate
    -> save

`out/` (the run directory): `config.json` (what was asked), `circuit.json` (the heads used), `checkpoint/` (the HF
Trainer's `checkpoint-STEP/` directories: each a PEFT adapter directory plus optimizer, scheduler and trainer
state; one per epoch, the last kept until the run is done and then removed, or every `--save-every K` steps, all
kept), `adapter/` (the trained adapter, PEFT's format: a finished run holds one copy of its weights), `result.json`
(a `RunResult`). The run is an `Artefact` identified by its `TrainConfig`: rerunning
the same command returns the finished result, or resumes from the last checkpoint with the same result (the data
order of every epoch is drawn from the seed, nothing else is random, and the Trainer restores the optimizer,
scheduler and RNG state); another config in the same directory is refused.

Training runs on the plain HF model (`circuitlab.models.plain`) through PEFT and the HF Trainer; TransformerLens
is imported only to locate a circuit when no `--circuit` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.artefact import Artefact
from circuitlab.core.errors import ConfigError
from circuitlab.core.io import check_writable
from circuitlab.core.processes import launched_main
from circuitlab.finetune.config import RunOptions, TrainConfig, check_run
from circuitlab.finetune.heads import choose_heads
from circuitlab.finetune.results import RunResult, made_from
from circuitlab.finetune.splits import eval_docs, held_out_docs, with_separator
from circuitlab.locate.config import default_heads_per_layer
from circuitlab.models.config import ModelConfig
from circuitlab.models.dims import model_dims
from circuitlab.models.identity import ModelDims, ModelIdentity
from circuitlab.tasks import Doc, Task, get_task, load_docs


@dataclass
class RunInputs:
    """A run's inputs, read and checked before any model is loaded."""

    task: Task
    train_docs: list[Doc]
    eval_split: str
    eval_docs: list[Doc]
    circuit: Circuit | None  # the --circuit file (its weights are checked once the model is loaded)
    held_out_docs: list[Doc] = field(default_factory=list)  # the protocol's held-out data (official)
    circuit_lora: object | None = None  # CircuitLoRA's ranks from its two edge circuits (`circuit_lora.CircuitLoRAPlan`)


def prepare(cfg: TrainConfig, data_dir=None, dims: ModelDims | None = None) -> RunInputs:
    """Load the docs and the circuit file; with the model's `dims`, check that the circuit fits them and
    that the heads can be chosen (so nothing fails after the model has loaded)."""
    task = get_task(cfg.task)
    eval_split = cfg.eval_split or task.eval_split
    loaded = load_docs(task, cfg.train_split, data_dir, limit=cfg.max_train) if cfg.spec.trains else []
    train_docs, held_out = held_out_docs(task, loaded, cfg, data_dir)
    evaluated = eval_docs(task, eval_split, data_dir, cfg, loaded)
    train_docs, held_out, evaluated = (with_separator(d, cfg.separator) for d in (train_docs, held_out, evaluated))
    circuit = Circuit.load(cfg.circuit) if cfg.circuit is not None and cfg.spec.uses_heads else None
    if circuit is not None:
        if dims is not None:
            circuit.validate(ModelIdentity(cfg.model, dims))
        choose_heads(circuit, cfg.heads, cfg.heads_per_layer, cfg.draw_seed)  # the heads can be chosen
    elif cfg.spec.uses_heads and dims is not None:
        check_heads_per_layer(cfg, dims)
    lora_plan = None
    if cfg.spec.edge_ranks:  # its two edge circuits are read (with torch) only when the method needs them
        from circuitlab.finetune.circuit_lora import plan as circuit_lora_plan

        lora_plan = circuit_lora_plan(cfg, dims)
    return RunInputs(task, train_docs, eval_split, evaluated, circuit, held_out, lora_plan)


def check_heads_per_layer(cfg: TrainConfig, dims: ModelDims) -> None:
    """Without a circuit file: n heads per layer must exist, and `redundant` must find n outside the n
    that the circuit it locates first will hold."""
    n = cfg.heads_per_layer or default_heads_per_layer(dims.n_heads)
    needed = 2 * n if cfg.heads == "redundant" else n
    if needed > dims.n_heads:
        what = f"2 x {n} (a circuit's and as many outside it)" if cfg.heads == "redundant" else str(n)
        raise ConfigError("heads_per_layer", f"{n} needs {what} heads per layer; the model has {dims.n_heads}")


def finetune(model, config: TrainConfig, out: str | Path, *, options: RunOptions | None = None, data_dir=None,
             progress: bool = True, on_step=None) -> RunResult:
    """Train `config.method` on `model` (a `ModelConfig` or a name, loaded after every check; a plain model, which
    is changed in place; or a bridged one, loaded again without its bridge), evaluate it, write `out/result.json`;
    resumable. `options`: how to train (checkpoint interval, gradient checkpointing), which does not change the
    result. `on_step(step)` is called after every optimizer step (tests use it to interrupt a run)."""
    cfg, options = config, options or RunOptions()
    out = check_writable(out, "dir")
    main = launched_main()  # under torchrun, one process writes the files
    run = Artefact(out / "result.json", cfg.to_dict(), "fine-tuning run", identity_of=made_from,
                   partial=out / ".partial", writes=main, siblings=RUN_FILES)
    if run.path.is_file():  # finished: reused (or refused) before anything else is asked of the inputs
        return run.finished(RunResult.load)
    # Every check before the first file (the run directory's lock included): a run that fails them leaves
    # nothing that would refuse the corrected command as "made with other settings".
    check_run(cfg, options, model_device(model))
    inputs = prepare(cfg, data_dir, model.dims if hasattr(model, "dims") else model_dims(cfg.model))
    with run:  # the one writer of `out` from here on (another process on it waits, then reuses or is refused)
        done = run.finished(RunResult.load)
        if done is not None:
            return done
        run.resume()  # an unfinished run of another config in this directory is refused
        from circuitlab.finetune.run import train_run  # torch, PEFT, the Trainer: every check has passed

        return train_run(model, cfg, inputs, out, run, options, data_dir, progress, on_step)


RUN_FILES = ("config.json", "circuit.json", "adapter")  # written beside result.json: their leftovers are repaired


def model_device(model) -> str | None:
    """Where the model trains, known before it loads (None: dispatched over devices)."""
    if isinstance(model, ModelConfig):
        return model.where.device
    if isinstance(model, str):
        return ModelConfig(model=model).where.device
    return str(model.device) if getattr(model.hf_model, "hf_device_map", None) is None else None
