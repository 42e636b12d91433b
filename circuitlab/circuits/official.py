"""The official code's circuit file, `info.pt`, read into a circuitlab `Circuit` and written from one.

The official `locating.py` ends with `torch.save(results, "info.pt")`, where `results` holds
`knowledge_circuit` = {layer: {"retain_heads": [heads, highest masked loss first]}}, `scores` (a
heads x located-layers tensor: the loss with each head masked) and `path` ([(layer, heads tensor)]).
Only `knowledge_circuit` is needed; the scores come along when they fit.

A `.pt` file is a pickle, and unpickling can run code. It is read with `torch.load(weights_only=True)`
and nothing else: a file that needs more (a custom class, a function) is refused with one line, never
loaded another way. Written files hold only dicts, lists, ints and tensors, so the same holds for them.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path

import torch

from circuitlab.circuits.circuit import Circuit, Heads, LocateRun, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable
from circuitlab.models import ModelDims, model_config, resolve

INFO_STRATEGY = "layer-conditioned"  # what the official locating.py runs
INFO_TABLE = "conditioned"  # its score table's name in a circuitlab circuit


def read_info(path: str | Path) -> dict:
    """The file's object, through `torch.load(weights_only=True)` only; any failure is one line."""
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"official circuit file not found: {path}")
    try:
        info = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError (code, or no pickle at all), RuntimeError, EOFError
        needs_code = re.search(r"GLOBAL \S+ was not an allowed global|is blocked|must be \S+ to load", str(e))
        why = ("it needs more than plain data (dicts, lists, numbers, tensors) to be unpickled, and circuitlab "
               "never unpickles code" if needs_code else f"not a readable torch file ({type(e).__name__})")
        raise CircuitlabError(f"refused {path}: {why}") from None
    if not isinstance(info, dict) or not isinstance(info.get("knowledge_circuit"), dict):
        raise CircuitlabError(f"{path}: not an official circuit file (no 'knowledge_circuit' dict)")
    return info


def info_heads(info: dict, source: str = "info.pt") -> dict[int, list[int]]:
    """layer -> retained heads in the file's order (the official code's: highest masked loss first)."""
    heads = {}
    try:
        for layer, entry in info["knowledge_circuit"].items():
            retain = entry["retain_heads"]
            retain = retain.tolist() if isinstance(retain, torch.Tensor) else list(retain)
            heads[_int(layer)] = [_int(h) for h in retain]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CircuitlabError(f"malformed official circuit file {source}: {type(e).__name__}: {e}") from None
    if not heads:
        raise CircuitlabError(f"official circuit file {source} has no layers")
    return heads


def circuit_from_info(path: str | Path, model: ModelInfo, task: TaskInfo | None = None) -> Circuit:
    """A circuitlab circuit with the file's heads, for `model` (whose dimensions the heads must fit; the
    file does not say which weights it came from, so `model.fingerprint` may be "")."""
    info = read_info(path)
    ordered = info_heads(info, str(path))
    heads: Heads = {layer: sorted(hs) for layer, hs in sorted(ordered.items())}
    model.dims.check_heads(heads, f"official circuit {path}: head")
    layers = sorted(heads)
    circuit = Circuit(
        model=model, task=task or TaskInfo("official", "train"), samples=[], strategy=INFO_STRATEGY,
        n_per_layer=max(len(hs) for hs in heads.values()), heads=heads, selected_by=INFO_TABLE,
        run=LocateRun(evaluator="official", layers=[layers[0], layers[-1]]), protocol="official",
    )
    table = _scores_table(info.get("scores"), layers, model.n_layers, model.n_heads)
    if table is not None:
        circuit.scores[INFO_TABLE] = table
    return circuit


def info_from_circuit(circuit: Circuit) -> dict:
    """The official code's `results` for this circuit: `knowledge_circuit` (heads by descending score
    where the circuit has its score table, else ascending), and `scores`/`path` when it has the table."""
    table = circuit.scores.get(circuit.selected_by or "")
    layers = sorted(circuit.heads)

    def order(layer: int) -> list[int]:
        row = table[layer] if table else None
        if row is None or any(math.isnan(row[h]) for h in circuit.heads[layer]):
            return sorted(circuit.heads[layer])
        return sorted(circuit.heads[layer], key=lambda h: (-row[h], h))

    out: dict = {"knowledge_circuit": {layer: {"retain_heads": order(layer)} for layer in layers}}
    if table and all(not any(math.isnan(x) for x in table[layer]) for layer in layers):
        out["scores"] = torch.tensor([table[layer] for layer in layers], dtype=torch.float32).T.contiguous()
        out["path"] = [(layer, torch.tensor(order(layer))) for layer in layers]
    return out


def write_info(circuit: Circuit, path: str | Path) -> Path:
    """`info_from_circuit` saved with `torch.save` (atomically: written beside, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(info_from_circuit(circuit), tmp)
    tmp.replace(path)
    return path


def import_info(path: str | Path, model: str, out: str | Path, task: str | None = None) -> Circuit:
    """`circuitlab official-import`: the info.pt as a circuit JSON for `model` (its config gives the dimensions
    the heads are checked against; no weights load), written to `out`."""
    out = check_writable(out)
    circuit = circuit_from_info(path, config_model_info(model), TaskInfo(task or "official", "train"))
    circuit.save(out)
    return circuit


def export_info(circuit_path: str | Path, out: str | Path) -> Circuit:
    """`circuitlab official-export`: a circuit JSON written as the official code's info.pt."""
    circuit = Circuit.load(circuit_path)
    write_info(circuit, check_writable(out))
    return circuit


def config_model_info(name: str) -> ModelInfo:
    """A `ModelInfo` from the model's config alone: its dimensions, no weight fingerprint (an info.pt
    does not say which weights it was located on)."""
    dims = ModelDims.of_config(model_config(name))
    return ModelInfo(name=name, hf_id=resolve(name).hf_id, revision=None, fingerprint="", **asdict(dims))


def _scores_table(scores, layers: list[int], n_layers: int, n_heads: int) -> list[list[float]] | None:
    """The file's heads x located-layers `scores` as circuitlab's layers x heads table (NaN where not
    located), when its shape fits contiguous located layers; otherwise None."""
    contiguous = layers == list(range(layers[0], layers[-1] + 1))
    if not isinstance(scores, torch.Tensor) or not contiguous or tuple(scores.shape) != (n_heads, len(layers)):
        return None
    table = [[math.nan] * n_heads for _ in range(n_layers)]
    for col, layer in enumerate(layers):
        table[layer] = [float(x) for x in scores[:, col]]
    return table


def _int(value) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)
