"""An edge circuit of a task, one library call:

    the pairs (a task's own, or a file), the chosen edges (--edges) and the output checked -> load the
    model -> attribute -> select -> faithfulness curve -> save (`circuitlab.edges.run.edges_to`; resumable)

This module imports neither torch nor TransformerLens (an edge circuit given to --edges is read with torch),
so a bad input is refused at once.
"""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.io import check_writable
from circuitlab.edges.config import EdgesConfig
from circuitlab.edges.pairs import read_pairs


def edges_task(model, task: str | None = None, *, pairs_file=None, split: str = "test", max_pairs: int | None = None,
               config: EdgesConfig | None = None, data_dir=None, out: str | Path, progress: bool = True):
    """The edge circuit (`EdgeCircuit`) of a task's clean/corrupted pairs, or of a pairs file's, into `out` (+
    .safetensors); resumable. `model`: a loaded model, a `ModelConfig` or a name (loaded after the checks)."""
    config = config or EdgesConfig()
    pairs, name, fingerprint = read_pairs(task, pairs_file, split, max_pairs, data_dir)
    out = check_writable(out)
    chosen = None
    if config.edges is not None:
        from circuitlab.edges.chosen import read_edges

        chosen = read_edges(config.edges, config.edges_top)
    from circuitlab.edges.run import edges_to  # torch and TransformerLens: every check has passed
    from circuitlab.models.loaded import as_bridged

    return edges_to(out, as_bridged(model, "edges"), pairs, config, name, progress, fingerprint, chosen=chosen)
