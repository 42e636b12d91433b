"""How a circuit changes over fine-tuning: the edge circuit of a run's base model (step 0) and of every
saved checkpoint, on the same pairs with the same settings, and how consecutive ones (and each against
the start) differ.

A checkpoint is a PEFT adapter directory (`RUN/checkpoint/checkpoint-N/`). Its adapter is folded into the
plain HF model (`merge_and_unload`) before the bridge is built, so every checkpoint is analysed as an
ordinary model of the same graph: LoRA/DoRA merge exactly, and so does HeadMap MHA (its map is linear in
o_proj's input, so it folds into o_proj's weight and bias). HeadMap HS adds its output to the hidden state
after the MLP, a writer the edge graph does not have, and it cannot be merged: such runs are refused
before anything loads.

Files in OUT_DIR: `step-N.json` (+ `.safetensors`), as `circuitlab edges` writes them; `steps.json`, what
each finished step file was computed from (the adapter's bytes, the pairs, the settings), so a rerun
reuses those that match and computes the rest; `track.json` (a `Track`); with `--heads`, `heads-step-N.json`
(the located head circuit).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from circuitlab.edges.change import layer_change
from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.edges.pairs import Pair
from circuitlab.edges.run import EdgesConfig
from circuitlab.errors import CircuitlabError
from circuitlab.io import read_json_object, write_json_atomic

SCHEMA = "circuitlab.track/1"
HS_REFUSED = ("HeadMap-HS adds its output to the hidden state after the MLP: the edge graph has no writer for "
              "it and it cannot be merged, so {what} cannot be tracked")
MERGED = "merged into o_proj"


# -- the run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path | None  # the adapter directory; None for the base model (step 0)

    @property
    def name(self) -> str:
        return f"step-{self.step}"


@dataclass
class RunInfo:
    """What `track` needs of a fine-tuning run, read and checked before any model loads."""

    run_dir: Path
    config: dict  # the run's TrainConfig as saved
    checkpoints: list[Checkpoint]  # step 0 (the base model) first, then in step order
    headmap: str | None  # "merged into o_proj" for HeadMap MHA, None without HeadMap


def read_run(run_dir: str | Path) -> RunInfo:
    """The run's config and checkpoints; refuses a directory without them and HeadMap-HS adapters."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise CircuitlabError(f"{run_dir}: no config.json (not a `circuitlab finetune` run directory)")
    config = read_json_object(path, "run config")
    if not isinstance(config.get("model"), str) or not isinstance(config.get("method"), str):
        raise CircuitlabError(f"{path}: not a circuitlab finetune config (needs its model and method)")
    from circuitlab.finetune.config import METHODS

    if config["method"] not in METHODS:
        raise CircuitlabError(f"{path}: unknown method {config['method']!r}")
    if METHODS[config["method"]].variant == "hs":  # headmap-hs and its combinations
        raise CircuitlabError(HS_REFUSED.format(what=f"a {config['method']} run"))
    found = []
    for d in (run_dir / "checkpoint").glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if step.isdigit() and (d / "adapter_config.json").is_file():
            found.append(Checkpoint(int(step), d))
    if not found:
        raise CircuitlabError(f"{run_dir}: no checkpoints with an adapter (checkpoint/checkpoint-N/adapter_config.json);"
                              " train with --save-every K to keep them")
    found.sort(key=lambda c: c.step)
    headmap = None
    for c in found:
        adapter = read_json_object(c.path / "adapter_config.json", "adapter config")
        if adapter.get("peft_type") == "HEADMAP":
            if adapter.get("variant") != "mha":
                raise CircuitlabError(HS_REFUSED.format(what=f"{c.path}"))
            headmap = MERGED
    return RunInfo(run_dir, config, [Checkpoint(0, None), *found], headmap)


def adapter_digest(c: Checkpoint) -> str:
    """The adapter's files' bytes, hashed: which weights a step file was computed from, known without
    loading the model (the model's own fingerprint needs it loaded)."""
    if c.path is None:
        return "base"
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        f = c.path / name
        h.update(name.encode() + (f.read_bytes() if f.is_file() else b""))
    return h.hexdigest()[:16]


def pairs_digest(pairs: list[Pair]) -> str:
    return hashlib.sha256(json.dumps([asdict(p) for p in pairs]).encode()).hexdigest()[:16]


def load_checkpoint(model_name: str, c: Checkpoint, where):
    """The bridged model of checkpoint `c`: the plain HF model with the adapter merged in (`merge_and_unload`;
    HeadMap's tuner merges MHA into o_proj), then bridged. `where`: a `Placement`."""
    from circuitlab.models.loaded import bridge_hf
    from circuitlab.models.sources import load_hf

    hf, tok = load_hf(model_name, where=where)
    if c.path is not None:
        import circuitlab  # noqa: F401  (registers HeadMap with PEFT)
        from peft import PeftModel

        hf = PeftModel.from_pretrained(hf, str(c.path)).merge_and_unload()
    if not where.dispatched:
        hf = hf.to(where.device)
    return bridge_hf(model_name, hf.eval(), tok, where.dtype)


# -- comparing circuits ------------------------------------------------------------------------------


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B|; two empty circuits are the same circuit (1)."""
    return len(a & b) / len(a | b) if a | b else 1.0


def head_set(heads: dict) -> set[str]:
    return {f"a{int(layer)}.h{h}" for layer, hs in heads.items() for h in hs}


@dataclass
class Change:
    """From the circuit at step `before` to the one at step `after`."""

    before: int
    after: int
    node_jaccard: float
    edge_jaccard: float
    nodes_added: int
    nodes_removed: int
    edges_added: int
    edges_removed: int
    layer_change: list[float]
    head_jaccard: float | None = None  # with --heads: of the located head circuits

    @classmethod
    def of(cls, before: int, after: int, a: EdgeCircuit, b: EdgeCircuit, heads: tuple[dict, dict] | None = None
           ) -> "Change":
        na, nb, ea, eb = a.nodes(), b.nodes(), a.edges(), b.edges()
        hj = jaccard(head_set(heads[0]), head_set(heads[1])) if heads else None
        return cls(before, after, jaccard(na, nb), jaccard(ea, eb), len(nb - na), len(na - nb), len(eb - ea),
                   len(ea - eb), layer_change(a, b), hj)


@dataclass
class StepRecord:
    step: int
    checkpoint: str | None  # the adapter directory, relative to the run
    file: str  # the step's circuit JSON, relative to OUT_DIR
    n_edges: int
    n_nodes: int
    heads: dict[str, list[int]] | None = None  # with --heads: the located head circuit


@dataclass
class Track:
    """Everything `track.json` holds."""

    run: str
    model: str
    method: str
    task: str  # where the pairs came from: the task's name or the pairs file
    n_pairs: int
    settings: dict  # the EdgesConfig
    headmap: str | None
    steps: list[StepRecord]
    vs_previous: list[Change]  # step i-1 -> step i
    vs_start: list[Change]  # step 0 -> step i
    schema: str = SCHEMA
    located_heads: bool = False
    notes: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, asdict(self))


def compare(steps: list[int], circuits: list[EdgeCircuit], heads: list[dict] | None = None
            ) -> tuple[list[Change], list[Change]]:
    """(vs previous, vs start): one `Change` per step after the first."""
    h = heads or None
    prev = [Change.of(steps[i - 1], steps[i], circuits[i - 1], circuits[i], h and (h[i - 1], h[i]))
            for i in range(1, len(steps))]
    start = [Change.of(steps[0], steps[i], circuits[0], circuits[i], h and (h[0], h[i]))
             for i in range(1, len(steps))]
    return prev, start


# -- the run over checkpoints -------------------------------------------------------------------------


def step_identity(c: Checkpoint, model: str, pairs: list[Pair], cfg: EdgesConfig, task: str) -> dict:
    return {"adapter": adapter_digest(c), "model": model, "pairs": pairs_digest(pairs), "task": task,
            "settings": asdict(cfg)}


def _finished(out_dir: Path, c: Checkpoint, identity: dict, manifest: dict) -> EdgeCircuit | None:
    """The step's circuit if its file is there and was computed from the same inputs."""
    path = out_dir / f"{c.name}.json"
    if manifest.get(c.name) != identity or not path.is_file():
        return None
    try:
        return EdgeCircuit.load(path)
    except (CircuitlabError, OSError, KeyError, ValueError):
        return None


def track(run: RunInfo, out_dir: str | Path, pairs: list[Pair], cfg: EdgesConfig, task: str, where,
          heads: bool = False, progress: bool = True, log=print) -> Track:
    """The edge circuit at every checkpoint (reusing finished step files), their comparisons, `track.json`."""
    from circuitlab.edges.run import edges_to

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "steps.json"
    manifest = read_json_object(manifest_path, "track steps") if manifest_path.is_file() else {}
    model_name = run.config["model"]
    circuits, head_circuits, records = [], [], []
    for c in run.checkpoints:
        identity = step_identity(c, model_name, pairs, cfg, task)
        circuit = _finished(out_dir, c, identity, manifest)
        heads_path = out_dir / f"heads-{c.name}.json"
        need_heads = heads and (manifest.get(heads_path.stem) != identity or not heads_path.is_file())
        hc = None
        if circuit is None or need_heads:
            model = load_checkpoint(model_name, c, where)
            if circuit is None:
                manifest.pop(c.name, None)
                write_json_atomic(manifest_path, manifest)
                circuit = edges_to(out_dir / f"{c.name}.json", model, pairs, cfg, task, progress,
                                   data_fingerprint=identity["pairs"])
                manifest[c.name] = identity
                write_json_atomic(manifest_path, manifest)
                log(f"{c.name}: {circuit.n_edges} edges, {len(circuit.nodes())} nodes")
            if need_heads:
                hc = locate_heads(heads_path, model, pairs, task, progress)
                manifest[heads_path.stem] = identity
                write_json_atomic(manifest_path, manifest)
            del model
        else:
            log(f"{c.name}: reused {c.name}.json")
        if heads and hc is None:
            from circuitlab.circuit import Circuit

            hc = Circuit.load(heads_path).heads
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
    return result


def locate_heads(path: Path, model, pairs: list[Pair], task: str, progress: bool) -> dict[int, list[int]]:
    """The head circuit located (layer-conditioned, `circuitlab locate`'s defaults) on the pairs' clean
    prompts and answers, their corrupted prompts kept (for a corrupted ablation): the same inputs as the
    edge circuit, so the two can be compared over training."""
    from circuitlab.circuit import Sample, TaskInfo
    from circuitlab.locate import LocateConfig, locate_to

    samples = [Sample(p.clean, p.answer, i, p.corrupted) for i, p in enumerate(pairs)]
    info = TaskInfo(task, "pairs", pairs_digest(pairs), len(pairs))
    return locate_to(path, model, samples, LocateConfig(), info, progress=progress, reuse=True).heads
