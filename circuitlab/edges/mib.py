"""Edge circuits in and out of the EAP-IG / MIB graph JSON, and as a head circuit for HeadMap.

EAP-IG's `Graph.to_json` (hannamw/EAP-IG, src/eap/graph.py) writes `{"cfg", "nodes", "edges"}`: `cfg` holds
what `Graph.from_model` needs (n_layers, n_heads, parallel_attn_mlp, d_model), `nodes` maps `input`,
`a{l}.h{h}`, `m{l}`, `logits` to `{"in_graph"}`, and `edges` maps every edge of the graph,
`parent->child` with `<q|k|v>` after an attention child, to `{"score", "in_graph"}`. Its `from_json` looks
every edge name up in a graph it builds from `cfg`, so a file we write must name exactly those edges.

The one difference is GQA: circuitlab's k and v readers are per KV group (TransformerLens 4 splits k/v
inputs per group), MIB's per query head (EAP-IG's `HookedTransformer` ungroups the KV heads: each query
head reads its own copy of k and v, and the gradient into a group's shared input is the sum of its heads').
So export shares a group's score equally among its query heads (score / heads per group, in float64) and
import sums them: the score mass of every group is kept both ways (a library-written file's per-head
scores sum to the group's), and export -> import returns the very scores it was given (the float64 sum of
the shares is within 1e-16 of the float32 score, which rounding then restores exactly). in_graph: export
writes the group's to each head, import keeps a group edge when any head's is kept. Files circuitlab wrote
before version 2 of the block copied the group's score to every head; they are imported with the mean.

A file we write also carries a `circuitlab` block (the model, task, method, ... of the `EdgeScores`), which
EAP-IG ignores; a foreign file names no model, so importing it needs one (`model=`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.edges.circuit import EdgeCircuit, EdgeScores, ig_points_of
from circuitlab.edges.graph import QKV, Graph
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable, read_json_object, write_json_atomic

MIB_SCHEMA = "circuitlab.edges.mib/2"  # of the `circuitlab` block inside a MIB file we write
COPIED_KV = "circuitlab.edges.mib/1"  # its version 1 copied a group's k/v score to each query head


# -- MIB's readers, as indices into circuitlab's -----------------------------------------------------------


def mib_readers(g: Graph) -> tuple[list[str], Int[Tensor, " mib_reader"]]:
    """MIB's reader names in its backward order (per layer: q of every head, k of every head, v of every
    head, the MLP; then the logits), and for each the circuitlab reader it is (a head's k/v: its group's,
    shared by `shares_of` of them)."""
    per = g.n_heads // g.n_kv_heads
    names, ours = [], []
    for layer in range(g.n_layers):
        for which in QKV:
            readers = g.qkv_readers(layer, which)
            for h in range(g.n_heads):
                names.append(f"a{layer}.h{h}<{which}>")
                ours.append(readers.start + (h if which == "q" else h // per))
        names.append(f"m{layer}")
        ours.append(g.mlp_reader(layer))
    names.append("logits")
    ours.append(g.logits_reader)
    return names, torch.tensor(ours)


def shares_of(g: Graph, ours: Int[Tensor, " mib_reader"]) -> Float[Tensor, " mib_reader"]:
    """For each MIB reader, how many MIB readers share its circuitlab reader (a KV group's query heads)."""
    count = torch.zeros(g.n_readers, dtype=torch.float64).index_add_(0, ours, torch.ones(len(ours), dtype=torch.float64))
    return count[ours]


def mib_cfg(model: ModelInfo) -> dict:
    """EAP-IG's `cfg`: what `Graph.from_model(dict)` reads, plus the KV heads (MIB's graph has no groups)."""
    return {"n_layers": model.n_layers, "n_heads": model.n_heads, "parallel_attn_mlp": False,
            "d_model": model.d_model, "n_key_value_heads": model.n_kv_heads}


# -- export --------------------------------------------------------------------------------------------------


def to_mib(circuit: EdgeCircuit) -> dict:
    """The circuit as EAP-IG's `Graph.to_json` writes it: every edge with its score (a KV group's shared
    among its query heads) and in_graph."""
    g, s = circuit.graph, circuit.scores
    names, ours = mib_readers(g)
    scores = (s.scores.detach().float().cpu().double()[:, ours] / shares_of(g, ours)).tolist()
    keep = circuit.keep.cpu()[:, ours].tolist()
    mask = g.edge_mask[:, ours].tolist()
    alive = circuit.nodes()
    nodes = {name: {"in_graph": name in alive} for name in g.writer_names}
    nodes["logits"] = {"in_graph": True}  # EAP-IG's logits node is always in the graph
    edges = {}
    for w, parent in enumerate(g.writer_names):
        for j, child in enumerate(names):
            if mask[w][j]:
                edges[f"{parent}->{child}"] = {"score": scores[w][j], "in_graph": keep[w][j]}
    meta = {k: v for k, v in asdict(s).items() if k not in ("scores", "model")}
    return {"cfg": mib_cfg(s.model), "nodes": nodes, "edges": edges,
            "circuitlab": {"schema": MIB_SCHEMA, "model": asdict(s.model), **meta, "rule": circuit.rule,
                           "faithfulness": circuit.curve}}


def save_mib(circuit: EdgeCircuit, path: str | Path) -> Path:
    return write_json_atomic(path, to_mib(circuit), indent=None)


# -- import --------------------------------------------------------------------------------------------------


def is_mib(doc: dict) -> bool:
    return all(k in doc for k in ("cfg", "nodes", "edges"))


def from_mib(doc: dict, model: ModelInfo | None = None, source: str = "MIB file") -> EdgeCircuit:
    """An `EdgeCircuit` from EAP-IG / MIB graph JSON. `model`: the model it belongs to (default: the one
    named in the file's `circuitlab` block); its shape must be the file's."""
    if not is_mib(doc) or not all(isinstance(doc[k], dict) for k in ("cfg", "nodes", "edges")):
        raise CircuitlabError(f"{source} is not EAP-IG / MIB graph JSON (expected objects cfg, nodes and edges)")
    meta = doc.get("circuitlab") if isinstance(doc.get("circuitlab"), dict) else {}
    try:
        model = model or (ModelInfo(**meta["model"]) if "model" in meta else None)
    except TypeError as e:
        raise CircuitlabError(f"{source}: malformed circuitlab model: {e}") from None
    if model is None:
        raise CircuitlabError(f"{source} names no model (it was not written by circuitlab): give the model "
                              "with --model-of FILE (a circuit of that model)")
    _check_shape(doc["cfg"], model, source)
    g = Graph(model.n_layers, model.n_heads, model.n_kv_heads)
    names, ours = mib_readers(g)
    column = {name: j for j, name in enumerate(names)}
    row = {name: w for w, name in enumerate(g.writer_names)}
    mask = g.edge_mask[:, ours].tolist()
    at, values, kept_at = [], [], []
    for name, info in doc["edges"].items():
        parent, _, child = name.partition("->")
        w, j = row.get(parent), column.get(child)
        if w is None or j is None or not mask[w][j]:
            raise CircuitlabError(f"{source}: edge {name!r} is not in the graph of {model.name} ({g.n_layers} layers "
                                  f"x {g.n_heads} heads)")
        score = info.get("score", "missing") if isinstance(info, dict) else "missing"
        score = math.nan if score is None else score  # to_json writes NaN as null
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not isinstance(info.get("in_graph"), bool):
            raise CircuitlabError(f"{source}: edge {name!r} needs a numeric score and a boolean in_graph")
        at.append(w * len(names) + j)
        values.append(float(score))
        kept_at.append(info["in_graph"])
    scores = torch.zeros(g.n_writers * len(names), dtype=torch.float64)
    in_graph = torch.zeros(g.n_writers * len(names), dtype=torch.bool)
    scores[at], in_graph[at] = torch.tensor(values, dtype=torch.float64), torch.tensor(kept_at, dtype=torch.bool)
    scores, in_graph = scores.view(g.n_writers, -1), in_graph.view(g.n_writers, -1)
    # Fold MIB's per-head k/v columns onto circuitlab's readers: the sum of the scores (the mean for a file
    # whose block says it copied them), any of in_graph.
    if meta.get("schema") == COPIED_KV:
        scores = scores / shares_of(g, ours)
    total = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float64).index_add_(1, ours, scores)
    kept = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float64).index_add_(1, ours, in_graph.double()) > 0
    try:
        edge_scores = EdgeScores(model, str(meta.get("task", "unknown")), str(meta.get("method", "mib")),
                                 str(meta.get("metric", "unknown")), meta.get("steps"), int(meta.get("n_pairs", 0)),
                                 total.float(), float(meta.get("seconds", 0.0)), meta.get("data_fingerprint"),
                                 ig_points_of(meta))
    except (TypeError, ValueError) as e:
        raise CircuitlabError(f"{source}: malformed circuitlab block: {e}") from None
    rule = meta.get("rule") if isinstance(meta.get("rule"), dict) else {"from": "mib"}
    circuit = EdgeCircuit(edge_scores, kept & g.edge_mask, rule)
    if isinstance(meta.get("faithfulness"), dict):  # measured on the circuit the file was written from
        circuit.curve = meta["faithfulness"]
    return circuit


def _check_shape(cfg: dict, model: ModelInfo, source: str) -> None:
    """The file's graph must be the model's: same layers and query heads (and KV heads, when it says)."""
    theirs = (cfg.get("n_layers"), cfg.get("n_heads"), cfg.get("n_key_value_heads", model.n_kv_heads))
    ours = (model.n_layers, model.n_heads, model.n_kv_heads)
    if theirs != ours:
        raise CircuitlabError(f"{source} is a graph of {theirs[0]} layers x {theirs[1]} heads ({theirs[2]} KV heads), "
                              f"not of {model.name}: {ours[0]} layers x {ours[1]} heads ({ours[2]} KV heads)")
    if cfg.get("parallel_attn_mlp"):
        raise CircuitlabError(f"{source} is a graph with parallel attention and MLP; circuitlab's Llama graphs "
                              "are sequential")


def load_mib(path: str | Path, model: ModelInfo | None = None) -> EdgeCircuit:
    return from_mib(read_json_object(path, "MIB graph file"), model, str(path))


# -- reading either kind, and the model a file belongs to ------------------------------------------------


def load_any(path: str | Path, model: ModelInfo | None = None) -> EdgeCircuit:
    """A circuitlab edge circuit (`F.json` + `F.safetensors`) or a MIB graph JSON, told apart by content."""
    doc = read_json_object(path, "edge circuit file")
    if is_mib(doc):
        return from_mib(doc, model, str(path))
    if model is not None:
        raise CircuitlabError(f"{path} is a circuitlab edge circuit, which names its model: --model-of is for a MIB "
                              "file that names none")
    return load_edge_circuit(path)


def load_edge_circuit(path: str | Path) -> EdgeCircuit:
    """`EdgeCircuit.load`, with a malformed file reported as one line."""
    try:
        return EdgeCircuit.load(path)
    except CircuitlabError:
        raise
    except Exception as e:  # a missing key, a wrong type, an unreadable safetensors file
        raise CircuitlabError(f"malformed edge circuit {path}: {type(e).__name__}: {e}") from None


def model_of(path: str | Path) -> ModelInfo:
    """The model of any circuitlab file that names one (an edge or a head circuit, a MIB file we wrote)."""
    doc = read_json_object(path, "model file")
    info = doc.get("model")
    if info is None and isinstance(doc.get("circuitlab"), dict):
        info = doc["circuitlab"].get("model")
    try:
        return ModelInfo(**info)
    except TypeError:
        raise CircuitlabError(f"{path} names no model (expected a circuitlab circuit file)") from None


# -- converting files ---------------------------------------------------------------------------------------

TARGETS = ("mib", "edges", "heads")


def convert(source: str | Path, to: str, out: str | Path, model_of_file: str | Path | None = None) -> EdgeCircuit:
    """`circuitlab edges-convert`: a circuitlab edge circuit or a MIB graph JSON (told apart by content) written as
    MIB graph JSON (`mib`), a circuitlab edge circuit (`edges`: OUT.json + OUT.safetensors) or a head circuit for
    `finetune --circuit` (`heads`). `model_of_file` names the model of a MIB file not written by circuitlab.
    Everything is read and checked before anything is written."""
    if to not in TARGETS:
        raise CircuitlabError(f"--to must be one of {', '.join(TARGETS)}; got {to!r}")
    out = check_writable(out)
    circuit = load_any(source, model_of(model_of_file) if model_of_file else None)
    if to == "mib":
        save_mib(circuit, out)
    elif to == "edges":
        circuit.save(out)
    else:
        head_circuit(circuit).save(out)
    return circuit


# -- a head circuit for HeadMap ------------------------------------------------------------------------------


def head_circuit(circuit: EdgeCircuit) -> Circuit:
    """The heads among the circuit's nodes as a `Circuit` that `finetune --circuit` reads: every layer
    listed, a layer without a head as an empty list (HeadMap maps nothing there). `n_per_layer` is the
    most heads of any layer: an edge circuit's layers hold different numbers."""
    s = circuit.scores
    found = circuit.heads()
    if not found:
        raise CircuitlabError("the edge circuit holds no attention head, so it gives HeadMap nothing to map")
    heads = {layer: found.get(layer, []) for layer in range(s.model.n_layers)}
    n = max(len(hs) for hs in heads.values())
    rule = ",".join(f"{k}={v}" for k, v in circuit.rule.items())
    task = TaskInfo(s.task, "pairs", s.data_fingerprint, s.n_pairs)
    return Circuit(s.model, task, [], f"edges-{s.method}", n, heads, selected_by=f"{s.metric} edges {rule}".strip())
