"""Edge scores: EAP, EAP-IG and the exact reference, one signature (their registry: `config.METHODS`).

Every method returns, for one batch of pairs, the sum over its pairs of each edge's score, where an
edge's score estimates how much of metric(clean) - metric(corrupted) runs through that edge: the drop in
the metric when only that edge carries its writer's corrupted output instead of the clean one.

- `eap`: the first-order estimate (a_clean[w] - a_corrupted[w]) . d metric / d(input of r), the
  gradient taken at the clean run (Syed et al.): two forwards and one backward for all edges.
- `eap-ig`: the same with the gradient averaged over m input embeddings interpolated from the corrupted
  to the clean one (Hanna et al.): at k/m for k = 0..m-1 by default, as hannamw/EAP-IG has done since
  13c0033 (2025-02) and MIB's reference runs, or k = 1..m (`ig_points="right"`), as the paper's code
  and EAP-IG before it (`EdgesConfig.alphas`). By the path integral, the scores of all edges leaving the
  input sum to metric(clean) - metric(corrupted) as m grows.
- `exact`: one patched forward per edge (batched), metric(clean) - metric(edge patched): the reference
  the estimates are tested against; practical on small models only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuitlab.edges.forward import frozen, new_acts, run, writer_outputs
from circuitlab.edges.graph import Graph
from circuitlab.edges.hooks import catch_gradients, embed_input, patch, record, split_graph
from circuitlab.edges.config import Metric
from circuitlab.edges.batches import PairBatch

Scores = Float[Tensor, "writer reader"]


def integrated(model, batch: PairBatch, metric: Metric, clean_lp, alphas: Sequence[float],
               only: list[tuple[int, int]] | None = None) -> Scores:
    """EAP-IG over the input embeddings: the gradient averaged over the inputs corrupted + a (clean -
    corrupted) for each a in `alphas`; alphas = (1,) is EAP (the clean point). `only`: keep just these
    (writer, reader) edges' scores (one backward scores them all anyway)."""
    g = Graph.of(model)
    scores = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float32, device=model.device)
    with split_graph(model.bridge), frozen(model):
        clean = writer_outputs(model, g, batch.clean, batch.attention_mask)
        corrupted = writer_outputs(model, g, batch.corrupted, batch.attention_mask)
        diff = clean - corrupted
        e_clean, e_corr = clean[:, :, 0], corrupted[:, :, 0]
        del clean, corrupted
        for a in alphas:
            emb = (e_corr + a * (e_clean - e_corr)).requires_grad_(True)
            hooks = [embed_input(emb), *catch_gradients(g, diff, scores, 1.0 / len(alphas))]
            logits = run(model, batch.clean, batch.attention_mask, hooks)
            metric(logits, batch, clean_lp).sum().backward()
    return scores if only is None else scores * chosen_mask(g, only, scores.device)


def eap(model, batch, metric, clean_lp, alphas: Sequence[float] = (1.0,),
        only: list[tuple[int, int]] | None = None) -> Scores:
    """EAP: the gradient at the clean run alone (the registry's one signature; `alphas` is not used)."""
    return integrated(model, batch, metric, clean_lp, (1.0,), only)


def chosen_mask(g: Graph, only: list[tuple[int, int]], device=None) -> Bool[Tensor, "writer reader"]:
    mask = torch.zeros(g.n_writers, g.n_readers, dtype=torch.bool, device=device)
    if only:
        w, r = zip(*only)
        mask[list(w), list(r)] = True
    return mask


@torch.no_grad()
def exact(model, batch: PairBatch, metric: Metric, clean_lp, alphas: Sequence[float] = (),
          only: list[tuple[int, int]] | None = None, edges_per_forward: int | None = None) -> Scores:
    """Patch each edge alone (its reader gets corrupted[w] - clean[w] added), many edges per forward:
    the batch is repeated once per edge, each copy with its own missing edge; as many copies as fit in
    a quarter of the free memory (`edges_that_fit`) unless `edges_per_forward` says. `only`: just these
    (writer, reader) edges; the others score 0."""
    g = Graph.of(model)
    scores = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float32, device=model.device)
    edges = g.edge_mask.nonzero().tolist() if only is None else [list(e) for e in only]
    b = len(batch)
    edges_per_forward = edges_per_forward or edges_that_fit(model, g, batch)
    with split_graph(model.bridge):
        corrupted = writer_outputs(model, g, batch.corrupted, batch.attention_mask)
        base = metric(run(model, batch.clean, batch.attention_mask, []), batch, clean_lp).sum()
        for start in range(0, len(edges), edges_per_forward):
            chunk = edges[start: start + edges_per_forward]
            e = len(chunk)
            missing = torch.zeros(e, b, g.n_writers, g.n_readers, dtype=torch.bool, device=model.device)
            for i, (w, r) in enumerate(chunk):
                missing[i, :, w, r] = True
            ids = batch.clean.repeat(e, 1)
            current = new_acts(model, g, ids)
            hooks = record(g, current) + patch(g, current, corrupted.repeat(e, 1, 1, 1), missing.flatten(0, 1))
            logits = run(model, ids, batch.attention_mask.repeat(e, 1), hooks)
            big = _repeated(batch, e)
            values = metric(logits, big, None if clean_lp is None else clean_lp.repeat(e, 1)).view(e, b).sum(1)
            for i, (w, r) in enumerate(chunk):
                scores[w, r] = base - values[i]
    return scores


def edges_that_fit(model, g: Graph, batch: PairBatch, most: int = 64) -> int:
    """How many edge copies of `batch` one forward of `exact` takes: each copy holds two float32 buffers of
    every writer's output ([pairs, pos, writer, d_model]: the run's own and the corrupted one it patches
    from), its missing-edge mask and about a dozen residual-width activations per layer; they get a
    quarter of the free memory (the device's, or the machine's on a CPU)."""
    pairs, pos = batch.clean.shape
    acts = 2 * pairs * pos * g.n_writers * model.d_model * 4
    per_copy = acts + pairs * g.n_writers * g.n_readers + 12 * g.n_layers * pairs * pos * model.d_model * 4
    return max(1, min(most, free_memory(model.device) // 4 // per_copy))


def free_memory(device) -> int:
    """Bytes free on `device` now."""
    if str(device).startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    import psutil

    return psutil.virtual_memory().available


def _repeated(batch: PairBatch, e: int) -> PairBatch:
    return PairBatch(*(None if t is None else t.repeat(e, 1) for t in (
        batch.clean, batch.corrupted, batch.attention_mask, batch.answer_mask, batch.targets, batch.wrong_targets)))
