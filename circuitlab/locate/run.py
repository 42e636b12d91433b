"""Running a strategy: `locate()` returns the circuit; `locate_to(path)` also owns its file.

`locate_to` is what every caller that writes a circuit uses (the CLI, fine-tuning, `reproduce`):
it checkpoints after every step to `<path>.partial.json`, saves the circuit atomically, then removes
the checkpoint; with `reuse`, a circuit already at `path` made with the same settings is returned as
it is.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from circuitlab.circuit import Circuit, ExcludedCircuit, LocateRun, ModelInfo, Sample, TaskInfo, sample_dict
from circuitlab.errors import CircuitlabError
from circuitlab.locate.ablation import Ablation
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.distributed import Shard
from circuitlab.locate.engine import Engine
from circuitlab.locate.evaluator import PlainEvaluator
from circuitlab.locate.samples import samples_fingerprint
from circuitlab.locate.steps import Checkpoint, Memo, Step, checkpoint_path, progress_bar
from circuitlab.protocol import get_protocol
from circuitlab.provenance import package_versions


def settings_of(model, info: ModelInfo, task: TaskInfo, samples: list[Sample], config: LocateConfig, plan) -> dict:
    """Everything that decides a run's result (a checkpoint or a circuit file is reused only if equal),
    the device and precision included: float rounding differs between them. The protocol is named
    only when it is not `paper`, the ablation (with the mean's reference docs) only when it is not
    `zero`, and a sample's corrupted prompt only when it has one, so the circuits and checkpoints made
    before they existed still match."""
    weight = next(model.hf_model.parameters())
    device, dtype = weight.device.type, str(weight.dtype).removeprefix("torch.")
    protocol = {} if config.protocol == "paper" else {"protocol": config.protocol}
    ablation = {} if config.ablation == "zero" else {"ablation": config.ablation}
    if config.ablation == "mean":
        ablation["reference"] = [sample_dict(s) for s in config.reference_docs]
    return {**protocol, **ablation,
        "model": asdict(info), "task": asdict(task), "samples": [sample_dict(s) for s in samples],
        "strategy": config.strategy, "n": plan.n, "seeds": list(config.seeds),
        "layers": [plan.layers[0], plan.layers[-1]], "prescreen": config.prescreen,
        "max_batch_tokens": config.max_batch_tokens, "attention": config.attention, "plain": config.plain,
        "plain_batch_size": config.plain_batch_size,
        "circuit": config.circuit.head_list if config.circuit else None, "device": device, "dtype": dtype,
    }


def locate(
    model,
    samples: list[Sample],
    config: LocateConfig | None = None,
    task: TaskInfo | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[Step], None] | None = None,
) -> Circuit:
    """Run one strategy and return the circuit with its numbers.

    With `checkpoint`, every finished step is saved there (atomically); a later call with the same
    model, samples and config continues from it and gives the same result.
    """
    config = config or LocateConfig()
    info = ModelInfo.of(model)
    plan = config.plan(model.dims, info.identity())
    if not samples:
        raise CircuitlabError("no samples to locate on")
    task = task or TaskInfo("custom", "samples", samples_fingerprint(samples), None)
    strategy = config.method
    settings = settings_of(model, info, task, samples, config, plan)
    shard = Shard.current()  # several processes share the work when torchrun started them
    eos = get_protocol(config.protocol).locate_target_eos
    ablation = Ablation.build(model, config.ablation, samples, config.reference_docs, eos, shard)
    saved = Checkpoint(checkpoint, settings, writes=shard.is_main)
    start = time.perf_counter()

    bar = progress_bar(sum(s.units(plan) for s in strategy.steps(plan)), config.strategy, progress and shard.is_main)

    def on_start(step: Step, replayed: bool) -> None:
        bar.set_description(f"{config.strategy}: {step.describe(model.n_layers)}")
        if replayed:
            bar.update(step.units(plan))

    memo = Memo(saved.done, lambda done: saved.save(done, saved.elapsed + time.perf_counter() - start),
                on_start, on_step)
    on_rows = lambda rows: bar.update(rows / len(samples))  # noqa: E731
    ev = (PlainEvaluator(model, samples, config.plain_batch_size, on_rows=on_rows, protocol=config.protocol,
                         ablation=ablation)
          if config.plain
          else Engine(model, samples, config.max_batch_tokens, on_rows=on_rows, shard=shard, attention=config.attention,
                      protocol=config.protocol, ablation=ablation))
    with bar:
        found = strategy.locate(ev, plan, memo)
    seconds = saved.elapsed + time.perf_counter() - start
    return Circuit(
        model=info, task=task, samples=list(samples), strategy=config.strategy, n_per_layer=plan.n,
        heads=found.heads.as_dict(), seed=config.seeds[0] if strategy.seeded else None,
        selected_by=strategy.selected_by, baseline_loss=found.baseline, loss_curve=found.curve,
        scores=found.tables, selections=found.selections,
        excluded=ExcludedCircuit(config.circuit.strategy, config.circuit.heads) if strategy.needs_circuit else None,
        run=LocateRun(
            evaluator="plain" if config.plain else "engine", layers=[plan.layers[0], plan.layers[-1]],
            max_batch_tokens=config.max_batch_tokens, prescreen=config.prescreen,
            seeds=list(config.seeds) if strategy.seeded else [], resumed_steps=memo.replayed,
            engine_flops=ev.flops.total if isinstance(ev, Engine) else None, settings=fingerprint(settings),
            processes=shard.world,
        ),
        timings={"locate_s": round(seconds, 3)}, versions=package_versions(), protocol=config.protocol,
        ablation=config.ablation, reference=config.reference_docs,
    )


def locate_to(
    path: str | Path,
    model,
    samples: list[Sample],
    config: LocateConfig | None = None,
    task: TaskInfo | None = None,
    progress: bool = True,
    on_step: Callable[[Step], None] | None = None,
    reuse: bool = False,
    finish: Callable[[Circuit], None] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Circuit:
    """`locate` with `path.partial.json` as its checkpoint, then the circuit saved to `path` and the
    checkpoint removed. `finish(circuit)` may add to the circuit before it is saved. With `reuse`, a
    circuit at `path` located with the same settings is returned instead of locating again. In a
    multi-process run the first process decides and writes; all return the same circuit."""
    path = Path(path)
    config = config or LocateConfig()
    shard = Shard.current()
    if reuse:
        done = shard.broadcast(_reusable(path, model, samples, config, task) if shard.is_main else None)
        if done is not None:
            log(f"{path}: located already with these settings, reused")
            return done
    ckpt = checkpoint_path(path)
    circuit = locate(model, samples, config, task, checkpoint=ckpt, progress=progress, on_step=on_step)
    if finish is not None:
        finish(circuit)
    if shard.is_main:
        circuit.save(path)
        ckpt.unlink(missing_ok=True)
    shard.barrier()
    return circuit


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _reusable(path: Path, model, samples, config: LocateConfig, task) -> Circuit | None:
    if not path.is_file():
        return None
    try:
        old = Circuit.load(path)
    except CircuitlabError:
        return None
    info = ModelInfo.of(model)
    task = task or TaskInfo("custom", "samples", samples_fingerprint(samples), None)
    want = fingerprint(settings_of(model, info, task, samples, config, config.plan(model.dims)))
    return old if old.run is not None and old.run.settings == want else None
