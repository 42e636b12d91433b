"""An edge attribution run with the pairs in hand (`edges_to`; the job that reads them is
`circuitlab.edges.job.edges_task`):

    attribute (batch by batch, resumable; every edge or a chosen set) -> select the circuit -> faithfulness
    curve -> save

The circuit is an `Artefact` (`circuitlab.core.artefact`): the running sum lives in its partial state
(`OUT.partial/`: the batches done and the sum so far), written atomically after every batch. Rerunning the
same command continues after the last finished batch; another run is refused while that one is unfinished.
Summation order is the batch order either way, so a resumed run gives the same scores as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from circuitlab.core.progress import progress_bar

from circuitlab.circuits.circuit import ModelInfo
from circuitlab.edges.chosen import digest, resolve
from circuitlab.edges.circuit import EdgeCircuit, EdgeScores
from circuitlab.edges.config import METHODS, METRICS, EdgesConfig
from circuitlab.edges.evaluate import faithfulness_curve, writer_means
from circuitlab.edges.forward import clean_answer_logprobs
from circuitlab.edges.graph import Graph
from circuitlab.edges.methods import chosen_mask
from circuitlab.edges.metrics import first_difference
from circuitlab.edges.batches import encode_pairs
from circuitlab.edges.pairs import Pair, pairs_digest
from circuitlab.core.artefact import Artefact
from circuitlab.core.errors import CircuitlabError


def edges_identity(model, pairs: list[Pair], cfg: EdgesConfig, chosen: list[str] | None = None) -> dict:
    """Everything that decides an edge circuit: the model's weights, the pairs, every setting, the chosen
    edges (their digest, not the path of the file they came from). `kv` appears only when per-head, so a
    circuit made before the choice existed is still this identity's."""
    settings = {k: v for k, v in asdict(cfg).items() if not (k == "kv" and v == "grouped")}
    return {"model": asdict(ModelInfo.of(model)), "pairs": pairs_digest(pairs), "n_pairs": len(pairs),
            **settings, "edges": digest(chosen)}


def batches_of(model, pairs: list[Pair], cfg: EdgesConfig) -> list:
    """The pairs as `PairBatch`es of `cfg.batch_size`, each pair checked (equal lengths) before any forward."""
    return [encode_pairs(model.tokenizer, pairs[i: i + cfg.batch_size], offset=i)
            for i in range(0, len(pairs), cfg.batch_size)]


def attribute(model, pairs: list[Pair], cfg: EdgesConfig, state: Artefact | None = None, task: str = "pairs",
              progress: bool = True, data_fingerprint: str | None = None,
              only: list[tuple[int, int]] | None = None) -> EdgeScores:
    """Every edge's score averaged over `pairs` (with `only`: just those (writer, reader) edges'; the others
    0); with `state` (an edge circuit's `Artefact`) the running sum is saved after every batch and an
    interrupted run continues after its last finished batch."""
    metric, method = METRICS[cfg.metric], METHODS[cfg.method]
    batches = batches_of(model, pairs, cfg)
    if metric.name == "logit-diff":
        for b in batches:
            first_difference(b)
    g = Graph.of(model)
    total, done, seconds = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float32), 0, 0.0
    resumed = state.resume() if state is not None else None
    if resumed:
        saved, tensors = resumed
        total, done, seconds = tensors["scores"], saved["batches_done"], saved["seconds"]
    bar = progress_bar(progress, total=len(batches), initial=done, desc=f"{cfg.method} {task}", unit="batch")
    for i in range(done, len(batches)):
        start = time.perf_counter()
        b = batches[i].to(model.device)
        clean_lp = clean_answer_logprobs(model, b) if metric.needs_clean else None
        total += method.fn(model, b, metric, clean_lp, cfg.alphas(), only=only).cpu()
        seconds += time.perf_counter() - start
        if state is not None:
            state.save_state({"batches_done": i + 1, "seconds": seconds}, {"scores": total})
        bar.update(1)
    bar.close()
    return EdgeScores(ModelInfo.of(model), task, cfg.method, cfg.metric, cfg.steps if method.uses_steps else None,
                      len(pairs), total / len(pairs), round(seconds, 3), data_fingerprint,
                      cfg.ig_points if method.uses_steps else None)


def edges_to(out: str | Path, model, pairs: list[Pair], cfg: EdgesConfig, task: str = "pairs",
             progress: bool = True, data_fingerprint: str | None = None, identity: dict | None = None,
             chosen: list[str] | None = None) -> EdgeCircuit:
    """attribute -> select -> (faithfulness curve) -> save `out` (+ .safetensors). The circuit at `out` is an
    `Artefact` of `identity` (default: `edges_identity`): reused when made from it, resumed, or refused.
    `chosen`: score only these edges (by name, `circuitlab.edges.chosen`); the circuit is chosen among them."""
    g = Graph.of(model)
    only = resolve(chosen, g) if chosen is not None else None  # a name not in the graph: refused before any work
    if only is not None and cfg.curve and max(cfg.curve) > len(only):
        raise CircuitlabError(f"--curve {max(cfg.curve)}: only {len(only)} edges are scored (--edges)")
    batches_of(model, pairs, cfg)  # every pair encodes (equal lengths), before the output is touched
    artefact = Artefact(out, identity or edges_identity(model, pairs, cfg, chosen), "edge circuit",
                        siblings=(Path(out).with_suffix(".safetensors").name,))
    with artefact:  # the one writer of `out` until it is written
        done = artefact.finished(EdgeCircuit.load)
        if done is not None:
            return done
        scores = attribute(model, pairs, cfg, artefact, task, progress, data_fingerprint, only)
        within = None if only is None else chosen_mask(g, only)
        circuit = EdgeCircuit.select(scores, **cfg.rule(g.n_edges, None if only is None else len(only)),
                                     within=within)
        if chosen is not None:
            circuit.rule["edges"] = digest(chosen)
        if cfg.curve:
            circuit.curve = curve_of(model, pairs, cfg, scores)
        circuit.made_from = artefact.identity
        artefact.commit(lambda: circuit.save(out))
        return circuit


def curve_of(model, pairs: list[Pair], cfg: EdgesConfig, scores: EdgeScores) -> dict:
    metric = METRICS[cfg.metric]
    batches = [b.to(model.device) for b in batches_of(model, pairs, cfg)]
    lps = [clean_answer_logprobs(model, b) if metric.needs_clean else None for b in batches]
    means = writer_means(model, batches) if cfg.ablation == "mean" else None
    curve = faithfulness_curve(model, batches, lps, scores.scores.to(model.device), list(cfg.curve), metric,
                               cfg.ablation, means)
    return asdict(curve)
