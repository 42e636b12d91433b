"""The heavy half of `finetune` (`circuitlab.finetune.job`), run once every check has passed: the plain model
loads, HeadMap's heads come from the circuit (given, or located now), the method becomes one PEFT adapter, the HF
Trainer trains it, the run is evaluated and saved."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from circuitlab.circuits.circuit import Circuit, ModelInfo
from circuitlab.core.artefact import Artefact
from circuitlab.core.io import write_dir_atomic, write_json_atomic
from circuitlab.core.processes import launched_main
from circuitlab.core.provenance import package_versions
from circuitlab.evaluate.run import evaluate
from circuitlab.finetune.config import RunOptions, TrainConfig
from circuitlab.finetune.data import encode_docs
from circuitlab.finetune.heads import choose_heads, heads_circuit, no_circuit
from circuitlab.finetune.results import EvalRecord, RunResult, TrainRecord
from circuitlab.finetune.trainer import train
from circuitlab.finetune.wrap import adapter_base, wrap
from circuitlab.locate.config import LocateConfig, default_heads_per_layer
from circuitlab.locate.job import locate_task
from circuitlab.locate.samples import SampleConfig
from circuitlab.models.config import ModelConfig
from circuitlab.models.fingerprint import weight_probe
from circuitlab.models.identity import count_params
from circuitlab.models.plain import as_plain
from circuitlab.tasks import Doc, data_fingerprint


def train_run(model, cfg: TrainConfig, inputs, out: Path, run: Artefact, options: RunOptions, data_dir=None,
              progress: bool = True, on_step=None) -> RunResult:
    """`inputs`: the job's checked `RunInputs`; `run`: its `Artefact` (result.json), committed at the end."""
    main = launched_main()  # under torchrun, one process writes the files
    model = as_plain(model)
    circuit = resolve_circuit(model, cfg, inputs, out, data_dir, progress)
    heads = choose_heads(circuit, cfg.heads, cfg.heads_per_layer, cfg.draw_seed) if circuit is not None else None

    def begin() -> None:
        """The run's first files, once everything that can fail before training has passed (the PEFT wrapping,
        the encoding of the documents), so a run that cannot start leaves none. The checkpoints are resume state
        like `.partial/`, removed with it once the result is written (unless --save-every keeps them)."""
        run.save_state({}, also_remove=None if options.save_every else ["checkpoint"])
        if main:
            write_json_atomic(out / "config.json", cfg.to_dict())
            if heads is not None:
                heads_circuit(circuit, heads, cfg.heads, cfg.draw_seed).save(out / "circuit.json")

    model_info = ModelInfo.of(model)  # before PEFT renames the modules it wraps
    probe = weight_probe(model.hf_model)  # what `eval --adapter` compares, tolerant of another dtype
    record = TrainRecord(cfg.train_split, len(inputs.train_docs),
                         data_fingerprint(inputs.train_docs) if inputs.train_docs else None)
    trainable, base_params = 0, count_params(model.hf_model.parameters())
    plan = inputs.circuit_lora
    lora_record = plan.record(model.hf_model) if plan else None  # before PEFT wraps
    if cfg.spec.trains:
        base = adapter_base(model, model_info.fingerprint)
        wrapped = wrap(model, cfg, heads, plan.lora_config(model.hf_model) if plan else None)
        seqs = [encode_docs(model.tokenizer, d, cfg.max_len, cfg.rules.train_eos, cfg.loss_on == "answer")
                for d in (inputs.train_docs, inputs.held_out_docs)]
        begin()
        record = TrainRecord(record.split, record.n_docs, record.data_fingerprint,
                             **train(model, wrapped, cfg, *seqs, out / "checkpoint", options, progress, on_step))
        if main:  # whole or not at all
            write_dir_atomic(out / "adapter", lambda tmp: wrapped.save(tmp, base))
        trainable = wrapped.n_trainable
    else:
        begin()
    result = RunResult(
        config=cfg.to_dict(), method=cfg.method, model={**asdict(model_info), "probe": probe},
        heads={str(k): v for k, v in heads.items()} if heads else None,
        circuit=None if circuit is None else {"task": circuit.task.name, "strategy": circuit.strategy,
                                              "n_per_layer": circuit.n_per_layer, "path": cfg.circuit},
        trainable_params=trainable, base_params=base_params, trainable_share_pct=100.0 * trainable / base_params,
        train=record, eval=evaluate_docs(model, inputs.task, inputs.eval_docs, inputs.eval_split, progress),
        versions=package_versions(), protocol=cfg.protocol, circuit_lora=lora_record,
    )
    run.commit(lambda: result.save(out / "result.json"))  # removes checkpoint/ with .partial/ (see `begin`)
    return result




def resolve_circuit(model, cfg: TrainConfig, inputs: RunInputs, out: Path, data_dir=None,
                    progress: bool = True) -> Circuit | None:
    """The circuit HeadMap's heads come from: --circuit, else located now on the training docs (through a
    TransformerBridge over a second copy of the weights: locating reads and masks heads by hook names)."""
    if not cfg.spec.uses_heads:
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
    where = ModelConfig(model.name, str(model.device), model.dtype_name)
    return locate_task(where, inputs.task, sampling=SampleConfig(split=cfg.train_split, max_docs=cfg.max_train),
                       config=LocateConfig(n_per_layer=cfg.heads_per_layer, protocol=cfg.protocol),
                       data_dir=data_dir, out=out / "located_circuit.json", progress=progress)


def evaluate_docs(model, task, docs: list[Doc], split: str, progress: bool) -> EvalRecord:
    """`evaluate.evaluate` on these docs, with how often each choice was predicted and was gold."""
    result = evaluate(model, task, split=split, progress=progress, docs=docs)
    preds, golds = [p.pred for p in result.predictions], [p.gold for p in result.predictions]
    n_choices = max(len(d.choices) for d in docs)
    return EvalRecord(split, result.n_docs, docs[0].index, result.data_fingerprint, result.metrics,
                      pred_counts=[preds.count(i) for i in range(n_choices)],
                      gold_counts=[golds.count(i) for i in range(n_choices)], preds=preds, seconds=result.seconds,
                      golds=golds, margins=[margin(p.logprobs, p.gold) for p in result.predictions if p.logprobs])


def margin(logprobs: list[float], gold: int) -> float:
    """The gold choice's log-likelihood minus the best other choice's."""
    return logprobs[gold] - max(lp for i, lp in enumerate(logprobs) if i != gold)
