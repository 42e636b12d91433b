"""Running a strategy: `locate()` returns the circuit; `locate_to(path)` also owns its file.

`locate_to` is what every caller that writes a circuit uses: the circuit at `path` is an `Artefact` identified
by `run_identity` (the model's weights, the task and samples, every setting that decides the result). A rerun
with the same identity returns the circuit already there, or continues an interrupted run from its partial
state (`path.partial/`: every finished step, saved after each); another identity is refused in one line.

Both take a `LocateConfig`, resolved at their entrance against the model (`ResolvedRun.of`), or a run resolved
already (how `locate_task` calls `locate_to`, and `locate_to` the strategy): the protocol, the plan and the model's
identity are then read, never resolved or hashed again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from circuitlab.circuits.circuit import Circuit, ExcludedCircuit, LocateRun, ModelInfo, Sample, TaskInfo, sample_dict
from circuitlab.core.artefact import Artefact
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.processes import Shard
from circuitlab.core.provenance import package_versions
from circuitlab.locate.ablation import Ablation
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.engine import Engine
from circuitlab.locate.evaluator import PlainEvaluator
from circuitlab.locate.resolved import ResolvedRun
from circuitlab.locate.samples import samples_fingerprint
from circuitlab.locate.steps import Memo, Step, candidates_bar


def run_identity(model, info: ModelInfo, task: TaskInfo, samples: list[Sample], config: LocateConfig, plan) -> dict:
    """Everything that decides a run's result, the device and precision included (float rounding differs
    between them). The protocol is named only when it is not `paper`, the ablation (with the mean's reference
    docs) only when it is not `zero`, so the identities of runs made before they existed stay the same."""
    weight = next(model.hf_model.parameters())
    device, dtype = weight.device.type, str(weight.dtype).removeprefix("torch.")
    protocol = {} if config.protocol == "paper" else {"protocol": config.protocol}
    ablation = {} if config.ablation == "zero" else {"ablation": config.ablation}
    if config.ablation == "mean":
        ablation["reference"] = fingerprint([sample_dict(s) for s in config.reference_docs])
    return {**protocol, **ablation,
            "model": asdict(info), "task": asdict(task), "samples": fingerprint([sample_dict(s) for s in samples]),
            "strategy": config.strategy, "n": plan.n, "seeds": list(config.seeds),
            "layers": [plan.layers[0], plan.layers[-1]], "prescreen": config.prescreen,
            "max_batch_tokens": config.max_batch_tokens, "attention": config.attention, "plain": config.plain,
            "plain_batch_size": config.plain_batch_size,
            "circuit": config.circuit.head_list if config.circuit else None, "device": device, "dtype": dtype}


def locate(
    model,
    samples: list[Sample],
    config: LocateConfig | ResolvedRun | None = None,
    task: TaskInfo | None = None,
    progress: bool = True,
    on_step: Callable[[Step], None] | None = None,
    state: Artefact | None = None,
) -> Circuit:
    """Run one strategy and return the circuit with its numbers. With `state` (how `locate_to` calls it),
    every finished step is saved as its partial state, and a run interrupted before continues from there."""
    run = ResolvedRun.of(model, config)
    task = task or TaskInfo("custom", "samples", samples_fingerprint(samples), None)
    return located(model, samples, run, task, run_identity(model, run.model, task, samples, run.config, run.plan),
                   progress, on_step, state)


def located(model, samples: list[Sample], run: ResolvedRun, task: TaskInfo, identity: dict, progress: bool = True,
            on_step: Callable[[Step], None] | None = None, state: Artefact | None = None) -> Circuit:
    """`locate` on a resolved run, whose `run_identity` (`identity`) its caller has made already."""
    config, plan, info = run.config, run.plan, run.model
    if not samples:
        raise CircuitlabError("no samples to locate on")
    strategy = config.method
    shard = Shard.current()  # several processes share the work when torchrun started them
    ablation = Ablation.build(model, config.ablation, samples, config.reference_docs, run.protocol.locate_target_eos,
                              shard)
    resumed = state.resume() if state is not None else None
    done, elapsed = (resumed[0].get("done", {}), resumed[0].get("elapsed_s", 0.0)) if resumed else ({}, 0.0)
    start = time.perf_counter()

    bar = candidates_bar(sum(s.units(plan) for s in strategy.steps(plan)), config.strategy, progress and shard.is_main)

    def on_start(step: Step, replayed: bool) -> None:
        bar.set_description(f"{config.strategy}: {step.describe(model.n_layers)}")
        if replayed:
            bar.update(step.units(plan))

    def save(steps: dict) -> None:
        if state is not None:
            state.save_state({"done": steps, "elapsed_s": elapsed + time.perf_counter() - start})

    memo = Memo(done, save, on_start, on_step)
    on_rows = lambda rows: bar.update(rows / len(samples))  # noqa: E731
    ev = (PlainEvaluator(model, samples, config.plain_batch_size, on_rows=on_rows, protocol=run.protocol,
                         ablation=ablation)
          if config.plain
          else Engine(model, samples, config.max_batch_tokens, on_rows=on_rows, shard=shard, attention=config.attention,
                      protocol=run.protocol, ablation=ablation))
    with bar:
        found = strategy.locate(ev, plan, memo)
    seconds = elapsed + time.perf_counter() - start
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
            engine_flops=ev.flops.total if isinstance(ev, Engine) else None, settings=fingerprint(identity),
            processes=shard.world, made_from=identity,
        ),
        timings={"locate_s": round(seconds, 3)}, versions=package_versions(), protocol=config.protocol,
        ablation=config.ablation, reference=config.reference_docs,
    )


def locate_to(
    path: str | Path,
    model,
    samples: list[Sample],
    config: LocateConfig | ResolvedRun | None = None,
    task: TaskInfo | None = None,
    progress: bool = True,
    on_step: Callable[[Step], None] | None = None,
    finish: Callable[[Circuit], None] | None = None,
    log: Callable[[str], None] = lambda line: None,
    identity: dict | None = None,
) -> Circuit:
    """`locate` into the file `path`: the circuit already there if located with the same identity, else located
    (resuming an interrupted run), `finish(circuit)` given the chance to add to it, saved, and its partial state
    removed. `identity`: what the circuit is recorded as made from (default: `run_identity`; `track` names a
    checkpoint by its adapter's bytes instead, known before the model loads). In a multi-process run the first
    process decides and writes; all return the same circuit."""
    run = ResolvedRun.of(model, config)
    task = task or TaskInfo("custom", "samples", samples_fingerprint(samples), None)
    shard = Shard.current()
    settings = run_identity(model, run.model, task, samples, run.config, run.plan)
    artefact = Artefact(path, identity or settings, "circuit", identity_of=made_from, writes=shard.is_main)
    with artefact:  # the first process is the one writer of `path` until it is written
        done = shard.broadcast(artefact.finished(Circuit.load) if shard.is_main else None)
        if done is not None:
            log(f"{path}: located already with these settings, reused")
            return done
        circuit = located(model, samples, run, task, settings, progress=progress, on_step=on_step, state=artefact)
        circuit.run.made_from = artefact.identity
        if finish is not None:
            finish(circuit)
        artefact.commit(lambda: circuit.save(path))
    shard.barrier()
    return circuit


def made_from(doc: dict) -> dict | None:
    """A circuit records its identity in `run.made_from`."""
    return (doc.get("run") or {}).get("made_from") if isinstance(doc, dict) else None


def fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
