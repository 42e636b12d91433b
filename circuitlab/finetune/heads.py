"""Which heads HeadMap maps: a circuit's, its anti-circuit, or random ones drawn by the one random-heads sampler."""

from __future__ import annotations

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.circuits.heads import HeadMask, bottom_heads, random_heads


def choose_heads(circuit: Circuit, mode: str, n_per_layer: int | None, seed: int) -> dict[int, list[int]]:
    """The circuit's heads, `n` random heads in every layer, `n` random heads outside the circuit, or the
    anti-circuit: the `n` heads of every layer whose masking raised the loss least in the table the circuit
    was selected by (the opposite end of the same scores, a control that is as far from the circuit as the
    locating algorithm can say; deterministic, so its runs replicate over training seeds like the circuit's).

    "redundant" follows the paper (Appendix, Table 6): heads drawn at random among those the
    locating algorithm did not select in that layer. Random draws are exactly those of
    `circuitlab locate --strategy random|redundant --seed SEED` over all layers.
    """
    n = n_per_layer or circuit.n_per_layer
    if mode == "anti":
        return anti_heads(circuit, n)
    if mode == "circuit":
        if n_per_layer is not None and any(len(hs) != n_per_layer for hs in circuit.heads.values()):
            raise CircuitlabError(f"heads_per_layer {n_per_layer} differs from the circuit's {circuit.n_per_layer}; "
                                  "locate a circuit with that many heads per layer")
        return {layer: sorted(hs) for layer, hs in circuit.heads.items()}
    exclude = circuit.mask if mode == "redundant" else HeadMask()
    dims = circuit.model.dims
    return random_heads(seed, range(dims.n_layers), dims.n_heads, n, exclude).as_dict()


def anti_heads(circuit: Circuit, n: int) -> dict[int, list[int]]:
    """The `n` lowest-scoring heads of each of the circuit's layers in the table it was selected by
    (`Circuit.selected_by`)."""
    table = circuit.scores.get(circuit.selected_by or "")
    if table is None:
        raise CircuitlabError(f"the circuit ({circuit.strategy}) records no score table it was selected by, so it "
                              "has no lowest-scoring heads: --heads anti needs a circuit from `circuitlab locate`")
    heads = {}
    for layer in sorted(circuit.heads):
        heads[layer] = bottom_heads(table[layer], n)
        if len(heads[layer]) < n:
            raise CircuitlabError(f"layer {layer} of the circuit's score table has {len(heads[layer])} scored "
                                  f"heads, fewer than n={n}")
    return heads


def heads_circuit(circuit: Circuit, heads: dict[int, list[int]], mode: str, seed: int) -> Circuit:
    """The circuit file a run records: the heads it actually used, and where they came from. `n_per_layer`
    is the most heads of any layer, as `edges.mib.head_circuit` records it (an edge circuit's layers differ)."""
    strategy = circuit.strategy if mode == "circuit" else mode
    n = max(len(hs) for hs in heads.values())
    return Circuit(circuit.model, circuit.task, circuit.samples, strategy, n, heads,
                   seed=None if mode in ("circuit", "anti") else seed)


def no_circuit(model, task: str, n_per_layer: int) -> Circuit:
    """The stand-in for runs with random heads and no located circuit: the model, n, nothing chosen."""
    return Circuit(ModelInfo.of(model), TaskInfo(task, "none"), [], "none", n_per_layer, {})
