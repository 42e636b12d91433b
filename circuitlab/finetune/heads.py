"""Which heads HeadMap maps: a circuit's, or random ones drawn by the one random-heads sampler."""

from __future__ import annotations

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.circuits.heads import HeadMask, random_heads


def choose_heads(circuit: Circuit, mode: str, n_per_layer: int | None, seed: int) -> dict[int, list[int]]:
    """The circuit's heads, `n` random heads in every layer, or `n` random heads outside the circuit.

    "redundant" follows the paper (Appendix, Table 6): heads drawn at random among those the
    locating algorithm did not select in that layer. Random draws are exactly those of
    `circuitlab locate --strategy random|redundant --seed SEED` over all layers.
    """
    n = n_per_layer or circuit.n_per_layer
    if mode == "circuit":
        if n_per_layer is not None and any(len(hs) != n_per_layer for hs in circuit.heads.values()):
            raise CircuitlabError(f"heads_per_layer {n_per_layer} differs from the circuit's {circuit.n_per_layer}; "
                                  "locate a circuit with that many heads per layer")
        return {layer: sorted(hs) for layer, hs in circuit.heads.items()}
    exclude = circuit.mask if mode == "redundant" else HeadMask()
    dims = circuit.model.dims
    return random_heads(seed, range(dims.n_layers), dims.n_heads, n, exclude).as_dict()


def heads_circuit(circuit: Circuit, heads: dict[int, list[int]], mode: str, seed: int) -> Circuit:
    """The circuit file a run records: the heads it actually used, and where they came from. `n_per_layer`
    is the most heads of any layer, as `edges.mib.head_circuit` records it (an edge circuit's layers differ)."""
    strategy = circuit.strategy if mode == "circuit" else mode
    n = max(len(hs) for hs in heads.values())
    return Circuit(circuit.model, circuit.task, circuit.samples, strategy, n, heads,
                   seed=None if mode == "circuit" else seed)


def no_circuit(model, task: str, n_per_layer: int) -> Circuit:
    """The stand-in for runs with random heads and no located circuit: the model, n, nothing chosen."""
    return Circuit(ModelInfo.of(model), TaskInfo(task, "none"), [], "none", n_per_layer, {})
