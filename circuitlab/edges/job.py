"""An edge circuit of a task, one library call:

    the pairs (a task's own, or a file), the chosen edges (--edges) and the output checked -> load the
    model -> attribute -> select -> faithfulness curve -> save (`circuitlab.edges.run.edges_to`; resumable)

This module imports neither torch nor TransformerLens (an edge circuit given to --edges is read with torch),
so a bad input is refused at once.
"""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable
from circuitlab.edges.config import EdgesConfig
from circuitlab.edges.pairs import read_pairs
from circuitlab.models.config import ModelConfig
from circuitlab.models.placement import maps_to_disk


def refuse_disk(blocks: list[str]) -> None:
    """Attribution reads every attention's weights outside its forward (TransformerLens's per-head q/k/v
    inputs), and a block offloaded to disk holds none then: refused in one line, naming the blocks."""
    if blocks:
        raise CircuitlabError(f"the device map offloads {', '.join(blocks)} to disk, and edges reads every "
                              f"block's weights outside its forward: raise --max-memory (bf16 weights stay "
                              f'memory-mapped, docs/scale.md) or keep those blocks on "cpu" in a JSON --device-map')


def edges_task(model, task: str | None = None, *, pairs_file=None, split: str | None = None, max_pairs: int | None = None,
               config: EdgesConfig | None = None, data_dir=None, out: str | Path, progress: bool = True):
    """The edge circuit (`EdgeCircuit`) of a task's clean/corrupted pairs, or of a pairs file's, into `out` (+
    .safetensors); resumable. `model`: a loaded model, a `ModelConfig` or a name (loaded after the checks)."""
    config = config or EdgesConfig()
    if isinstance(model, ModelConfig):
        refuse_disk(maps_to_disk(model.where))
    pairs, name, fingerprint = read_pairs(task, pairs_file, split, max_pairs, data_dir)
    out = check_writable(out)
    chosen, scored_on = None, None
    if config.edges is not None:
        from circuitlab.edges.chosen import read_edges, recorded_model

        chosen = read_edges(config.edges, config.edges_top)
        scored_on = recorded_model(config.edges)
        if scored_on is not None and isinstance(model, (str, ModelConfig)):  # its dimensions, before any load
            from circuitlab.models.dims import model_dims
            from circuitlab.models.identity import ModelIdentity, check_same_model

            name = model if isinstance(model, str) else model.model
            check_same_model(ModelIdentity(scored_on.name, scored_on.dims), ModelIdentity(name, model_dims(name)),
                             f"--edges {config.edges}", made="scored")
    from circuitlab.edges.run import edges_to  # torch and TransformerLens: every check has passed
    from circuitlab.models.loaded import as_bridged
    from circuitlab.models.placement import blocks_on_disk
    from circuitlab.models.ungroup import ungroup_kv_heads

    if config.kv == "per-head" and not isinstance(model, (str, ModelConfig)) and model.n_kv_heads < model.n_heads:
        raise CircuitlabError("--kv per-head changes the model before it is bridged: give its name or ModelConfig")
    model = as_bridged(model, "edges", ungroup_kv_heads if config.kv == "per-head" else None)
    refuse_disk(blocks_on_disk(model.hf_model.named_parameters()))
    if scored_on is not None:  # and its weights, once they are loaded
        from circuitlab.circuits.circuit import ModelInfo
        from circuitlab.models.identity import check_same_model

        check_same_model(scored_on.identity(), ModelInfo.of(model).identity(), f"--edges {config.edges}",
                         made="scored")
    return edges_to(out, model, pairs, config, name, progress, fingerprint, chosen=chosen)
