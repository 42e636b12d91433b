"""How a circuit changes over fine-tuning: the edge circuit of a run's base model (step 0) and of every
saved checkpoint, on the same pairs with the same settings, and how consecutive ones (and each against
the start) differ.

A checkpoint is a PEFT adapter directory (`RUN/checkpoint/checkpoint-N/`). Its adapter is folded into the
plain HF model (`merge_and_unload`) before the bridge is built, so every checkpoint is analysed as an
ordinary model of the same graph: LoRA/DoRA merge exactly, and so does HeadMap MHA (its map is linear in
o_proj's input, so it folds into o_proj's weight and bias). HeadMap HS adds its output to the hidden state
after the MLP, a writer the edge graph does not have, and it cannot be merged: such runs are refused
before anything loads.

Files in OUT_DIR: `step-N.json` (+ `.safetensors`), as `circuitlab edges` writes them, each an `Artefact`
identified by what it was computed from (the adapter's bytes, the pairs, the settings: known before any model
loads), so a rerun reuses those that match and computes the rest; `track.json` (a `Track`); with `--heads`,
`heads-step-N.json` (the located head circuit, identified the same way).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from peft import PeftModel

from circuitlab.circuits.circuit import Circuit, Sample, TaskInfo
from circuitlab.core.artefact import Artefact
from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.edges.config import EdgesConfig
from circuitlab.edges.pairs import Pair, pairs_digest
from circuitlab.edges.run import edges_to
from circuitlab.headmap import register
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.run import locate_to
from circuitlab.locate.run import made_from as circuit_made_from
from circuitlab.models.loaded import bridge_hf
from circuitlab.models.sources import load_hf, torch_dtype
from circuitlab.models.ungroup import ungroup_kv_heads
from circuitlab.report.write import write_figures
from circuitlab.studies.changes import StepRecord, Track, compare
from circuitlab.studies.runs import Checkpoint, RunInfo, step_identity
from circuitlab.studies.track_figures import track_figures


# -- the run ---------------------------------------------------------------------------------------------


def load_checkpoint(model_name: str, c: Checkpoint, where, kv: str = "grouped"):
    """The bridged model of checkpoint `c`: the plain HF model with the adapter merged in (`merge_and_unload`;
    HeadMap's tuner merges MHA into o_proj), then, under `kv="per-head"`, its multi-head equivalent (as `edges
    --kv per-head` reads a model: merged first, so an adapter on k_proj/v_proj is ungrouped too), then bridged.
    `where`: a `Placement`."""
    hf, tok = load_hf(model_name, where=where)
    if c.path is not None:
        register()  # a checkpoint may be a HeadMap adapter
        hf = PeftModel.from_pretrained(hf, str(c.path)).merge_and_unload()
    if kv == "per-head":
        ungroup_kv_heads(hf)
    if not where.dispatched:
        hf = hf.to(where.device)
    return bridge_hf(model_name, hf.eval(), tok, torch_dtype(where.dtype))


# -- the run over checkpoints -------------------------------------------------------------------------


def circuits_over_training(run: RunInfo, out_dir: Path, pairs: list[Pair], cfg: EdgesConfig, task: str, where,
                           heads: bool = False, png: bool = True, plotlyjs: str = "directory", progress: bool = True,
                           log=print) -> Track:
    """The edge circuit at every checkpoint (reusing finished step files), their comparisons, `track.json`, the
    figures."""
    model_name = run.config["model"]
    circuits, head_circuits, records = [], [], []
    for c in run.checkpoints:
        identity = step_identity(c, model_name, pairs, cfg, task)
        step = Artefact(out_dir / f"{c.name}.json", identity, "edge circuit")
        heads_step = Artefact(out_dir / f"heads-{c.name}.json", identity, "circuit", identity_of=circuit_made_from)
        circuit = step.finished(EdgeCircuit.load)
        hc = heads_step.finished(lambda path: Circuit.load(path).heads) if heads else None
        if circuit is None or (heads and hc is None):
            model = load_checkpoint(model_name, c, where, cfg.kv)
            if circuit is None:
                circuit = edges_to(step.path, model, pairs, cfg, task, progress, identity["pairs"], identity)
                log(f"{c.name}: {circuit.n_edges} edges, {len(circuit.nodes())} nodes")
            if heads and hc is None:
                hc = locate_heads(heads_step.path, model, pairs, task, progress, identity)
            del model
        else:
            log(f"{c.name}: reused {c.name}.json")
        circuits.append(circuit)
        head_circuits.append(hc)
        records.append(StepRecord(c.step, None if c.path is None else str(c.path.relative_to(run.run_dir)),
                                  f"{c.name}.json", circuit.n_edges, len(circuit.nodes()),
                                  None if hc is None else {str(k): list(v) for k, v in hc.items()}))
    steps = [c.step for c in run.checkpoints]
    prev, start = compare(steps, circuits, head_circuits if heads else None)
    notes = ["layer_change: per source layer, sum over edges of |s_after - s_before| if the edge is in both "
             "circuits, else the |score| of the one it is in (CircuitLoRA's rule); the input counts as layer 0"]
    result = Track(str(run.run_dir), model_name, run.config["method"], task, len(pairs), asdict(cfg), run.headmap,
                   records, prev, start, located_heads=heads, notes=notes)
    result.save(out_dir / "track.json")
    write_figures(track_figures(result, circuits), out_dir, png=png, plotlyjs=plotlyjs)
    return result


def locate_heads(path: Path, model, pairs: list[Pair], task: str, progress: bool, identity: dict) -> dict[int, list[int]]:
    """The head circuit located (layer-conditioned, `circuitlab locate`'s defaults) on the pairs' clean
    prompts and answers, their corrupted prompts kept (for a corrupted ablation): the same inputs as the
    edge circuit, so the two can be compared over training."""
    samples = [Sample(p.clean, p.answer, i, p.corrupted) for i, p in enumerate(pairs)]
    info = TaskInfo(task, "pairs", pairs_digest(pairs), len(pairs))
    return locate_to(path, model, samples, LocateConfig(), info, progress=progress, identity=identity).heads
