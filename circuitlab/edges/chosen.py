"""A chosen set of edges to score (`--edges FILE`, `--edges-top N`): `exact` costs one patched forward per
edge, so on a real model a user checks a circuit's top edges, not the whole graph.

FILE is a circuitlab edge circuit (its kept edges, or with `edges_top` its N highest |score| of all the
edges it scored, e.g. an EAP-IG run's), a MIB graph JSON circuitlab wrote (the same, as imported), or a
text file of circuitlab edge names (`input->a1.h2<q>`, `a0.h3->a2.g1<k>`, `m4->logits`), one per line
(blank lines and `#` comments skipped). The names are read and checked before the model loads; they are
matched to the model's graph once it is known (`resolve`), before any attribution runs. The identity of
a run records the names' digest, not the file's path.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from circuitlab.core.errors import CircuitlabError

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.<>-_")


def read_edges(path: str | Path, top: int | None = None) -> list[str]:
    """The edge names chosen by `path` (see the module docstring), in the file's order (a circuit's: by |score|)."""
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"--edges: {path} not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        names = _from_circuit(path, top)
    else:
        if top is not None:
            raise CircuitlabError("--edges-top needs an edge circuit's scores; a list of edge names has none")
        names = [line.split("#")[0].strip() for line in text.splitlines()]
        names = [n for n in names if n]
        bad = next((n for n in names if "->" not in n or not set(n) <= NAME_CHARS), None)
        if bad is not None:
            raise CircuitlabError(f"--edges: {path}: {bad!r} is not an edge name (e.g. input->a1.h2<q>, m0->logits)")
    if not names:
        raise CircuitlabError(f"--edges: {path} chooses no edge")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise CircuitlabError(f"--edges: {path} names {dup!r} twice")
    return names


def _from_circuit(path: Path, top: int | None) -> list[str]:
    import torch

    from circuitlab.edges.mib import load_any

    circuit = load_any(path)  # malformed JSON: one line from read_json
    g, s = circuit.graph, circuit.scores.scores
    if top is None:
        chosen = circuit.keep
    else:
        mag = s.abs().masked_fill(~g.edge_mask, -1.0).flatten()
        order = torch.argsort(-mag, stable=True)[: min(top, g.n_edges)]
        chosen = torch.zeros_like(mag, dtype=torch.bool)
        chosen[order] = True
        chosen = chosen.view_as(s)
    pairs = sorted(chosen.nonzero().tolist(), key=lambda wr: -abs(float(s[wr[0], wr[1]])))
    return [g.edge_name(w, r) for w, r in pairs]


def recorded_model(path: str | Path):
    """The model (`ModelInfo`) a circuitlab edge circuit given as --edges was scored on; None for a list of names
    or a MIB graph, which record none. Edge names are the same on every model of the same shape, so a circuit of
    another model's weights would be matched here without a word: its model is checked like a head circuit's."""
    from circuitlab.core.io import read_json_object
    from circuitlab.edges.mib import is_mib, load_edge_circuit

    path = Path(path)
    if not path.read_text(encoding="utf-8", errors="replace").lstrip().startswith("{"):
        return None
    if is_mib(read_json_object(path, "edge circuit file")):
        return None
    return load_edge_circuit(path).scores.model


def resolve(names: list[str], g) -> list[tuple[int, int]]:
    """The (writer, reader) index of each name in graph `g`; a name not in it is one clear error."""
    index = {g.edge_name(w, r): (w, r) for w, r in g.edge_mask.nonzero().tolist()}
    if g.n_kv_heads == g.n_heads:  # names written before a multi-head graph's k/v readers were named by head
        names = [re.sub(r"\.g(\d+)<([kv])>$", r".h\1<\2>", n) for n in names]
    missing = [n for n in names if n not in index]
    if missing:
        raise CircuitlabError(f"--edges: {len(missing)} edge(s) are not in the model's graph ({g.n_layers} layers x "
                              f"{g.n_heads} heads, {g.n_kv_heads} KV groups), e.g. {missing[0]!r}")
    return [index[n] for n in names]


def digest(names: list[str] | None) -> str | None:
    """What a run's identity records of its chosen edges: their set, not where they were read from."""
    if names is None:
        return None
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]
