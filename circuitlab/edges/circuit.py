"""An edge circuit: the scored graph, the edges kept, and its files.

Selection keeps the top n edges by |score| (or every edge with |score| >= a threshold), then prunes dead
nodes until nothing changes: a head or MLP with no kept edge into it (its q, its KV group's k or v, its
MLP input) writes only what the ablation gives it, and one with no kept edge out of it reaches nothing,
so their edges go (the input and the logits are never pruned).

Files: `F.json` (what was run, the kept edges by name with their scores, the nodes) and beside it
`F.safetensors` (every edge's score as a [writer, reader] matrix, and the kept-edge mask), so a circuit
of another size is a new selection of the same scores, not a new attribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from safetensors.torch import load_file, save
from torch import Tensor

from circuitlab.circuits.circuit import ModelInfo
from circuitlab.edges.graph import Graph
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object, write_bytes_atomic, write_json_atomic

SCHEMA = "circuitlab.edges/1"


def feeds(g: Graph) -> Bool[Tensor, "writer reader"]:
    """[w, r] True where reader r is an input of writer w's node (a head's q and its group's k, v; an MLP's
    input): how liveness passes through a node."""
    out = torch.zeros(g.n_writers, g.n_readers, dtype=torch.bool)
    index = {name: w for w, name in enumerate(g.writer_names)}
    for node, readers in g.node_readers.items():
        out[index[node], readers] = True
    return out


def prune(keep: Bool[Tensor, "writer reader"], g: Graph) -> Bool[Tensor, "writer reader"]:
    """Drop the edges of dead nodes until none is left (see the module docstring)."""
    keep = keep & g.edge_mask.to(keep.device)
    f = feeds(g).to(keep.device)
    while True:
        into = (f & keep.any(0)[None, :]).any(1)  # writer nodes with a kept edge into them
        into[0] = True  # the input
        out_of = keep.any(1)
        reader_alive = (f & out_of[:, None]).any(0)  # a reader whose node writes on
        reader_alive[g.logits_reader] = True
        pruned = keep & into[:, None] & reader_alive[None, :]
        if torch.equal(pruned, keep):
            return keep
        keep = pruned


def select(scores: Float[Tensor, "writer reader"], g: Graph, top_n: int | None = None,
           threshold: float | None = None, within: Bool[Tensor, "writer reader"] | None = None
           ) -> Bool[Tensor, "writer reader"]:
    """The top `top_n` edges by |score| (ties: the lower index first), or those with |score| >= threshold,
    pruned; `within`: only among these edges (the ones a run scored)."""
    if (top_n is None) == (threshold is None):
        raise CircuitlabError("give exactly one of top_n and threshold")
    allowed = g.edge_mask.to(scores.device) if within is None else g.edge_mask.to(scores.device) & within.to(scores.device)
    mag = scores.abs().masked_fill(~allowed, -1.0)
    if top_n is not None:
        flat = mag.flatten()
        order = torch.argsort(-flat, stable=True)[: min(top_n, int(allowed.sum()))]
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[order] = True
        keep = keep.view_as(mag)
    else:
        keep = mag >= threshold
    return prune(keep, g)


@dataclass
class EdgeScores:
    """What an attribution run found: every edge's score (summed then averaged over `n_pairs`)."""

    model: ModelInfo
    task: str
    method: str
    metric: str
    steps: int | None
    n_pairs: int
    scores: Float[Tensor, "writer reader"]
    seconds: float = 0.0
    data_fingerprint: str | None = None
    ig_points: str | None = None  # eap-ig's Riemann sum, "left" or "right" (`EdgesConfig.ig_points`)

    @property
    def graph(self) -> Graph:
        return Graph(self.model.n_layers, self.model.n_heads, self.model.n_kv_heads)


def ig_points_of(doc: dict) -> str | None:
    """A file's `ig_points`; files written before there was a choice used k = 1..m ("right")."""
    return doc.get("ig_points", "right" if doc.get("method") == "eap-ig" else None)


@dataclass
class EdgeCircuit:
    """A selection of edges from an `EdgeScores`."""

    scores: EdgeScores
    keep: Bool[Tensor, "writer reader"]
    rule: dict = field(default_factory=dict)  # {"top_n": n} or {"threshold": t}
    curve: dict | None = None  # the faithfulness curve (circuitlab.edges.evaluate.FaithfulnessCurve), if measured
    made_from: dict | None = None  # the identity it was made with (`circuitlab.edges.run.edges_identity`)

    @classmethod
    def select(cls, scores: EdgeScores, top_n: int | None = None, threshold: float | None = None,
               within: Bool[Tensor, "writer reader"] | None = None) -> "EdgeCircuit":
        keep = select(scores.scores, scores.graph, top_n, threshold, within)
        rule = {"top_n": top_n} if top_n is not None else {"threshold": threshold}
        return cls(scores, keep, rule)

    @property
    def graph(self) -> Graph:
        return self.scores.graph

    @property
    def n_edges(self) -> int:
        return int(self.keep.sum())

    def edges(self) -> set[str]:
        g = self.graph
        return {g.edge_name(w, r) for w, r in self.keep.nonzero().tolist()}

    def nodes(self) -> set[str]:
        """Writer nodes with a kept edge out of them, and the logits when anything reaches them."""
        g = self.graph
        names = {g.writer_name(w) for w in self.keep.any(1).nonzero()[:, 0].tolist()}
        return names | ({"logits"} if self.keep[:, g.logits_reader].any() else set())

    def heads(self) -> dict[int, list[int]]:
        """The attention heads among the nodes, as a head circuit (layer -> heads) for HeadMap."""
        out: dict[int, list[int]] = {}
        for name in self.nodes():
            if name.startswith("a"):
                layer, head = name[1:].split(".h")
                out.setdefault(int(layer), []).append(int(head))
        return {layer: sorted(hs) for layer, hs in sorted(out.items())}

    # -- files -------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        g, s = self.graph, self.scores
        kept = sorted(self.keep.nonzero().tolist(), key=lambda wr: -abs(float(s.scores[wr[0], wr[1]])))
        meta = {k: v for k, v in asdict(s).items() if k not in ("scores", "model")}
        doc = {
            "schema": SCHEMA, "model": asdict(s.model), **meta, "rule": self.rule,
            "n_edges_total": g.n_edges, "n_edges": len(kept), "nodes": sorted(self.nodes()),
            "edges": [{"edge": g.edge_name(w, r), "score": float(s.scores[w, r])} for w, r in kept],
            "faithfulness": self.curve, "made_from": self.made_from,
        }
        tensors = {"scores": s.scores.detach().float().cpu().contiguous(),
                   "keep": self.keep.to(torch.uint8).cpu().contiguous()}
        write_bytes_atomic(path.with_suffix(".safetensors"), save(tensors))
        write_json_atomic(path, doc)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EdgeCircuit":
        path = Path(path)
        doc = read_json_object(path)
        if doc.get("schema") != SCHEMA:
            raise CircuitlabError(f"{path}: not a circuitlab edge circuit (schema {doc.get('schema')!r})")
        beside = path.with_suffix(".safetensors")
        if not beside.is_file():
            raise CircuitlabError(f"{path}: its scores file {beside.name} is missing")
        try:
            t = load_file(str(beside))
            model = ModelInfo(**doc["model"])
            scores = EdgeScores(model, doc["task"], doc["method"], doc["metric"], doc.get("steps"), doc["n_pairs"],
                                t["scores"], doc.get("seconds", 0.0), doc.get("data_fingerprint"), ig_points_of(doc))
            keep = t["keep"].bool()
        except (KeyError, TypeError, OSError, ValueError) as e:  # safetensors' own errors are ValueError/OSError
            raise CircuitlabError(f"{path}: malformed edge circuit ({type(e).__name__}: {e})") from None
        g = scores.graph
        if tuple(t["scores"].shape) != (g.n_writers, g.n_readers):
            raise CircuitlabError(f"{beside}: scores of shape {tuple(t['scores'].shape)}, the model's graph is "
                                  f"{g.n_writers} x {g.n_readers}")
        return cls(scores, keep, doc.get("rule", {}), doc.get("faithfulness"), doc.get("made_from"))

