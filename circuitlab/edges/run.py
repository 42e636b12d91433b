"""An edge attribution run: pairs in batches, scores summed batch by batch, resumable; then the circuit
and, if asked, its faithfulness curve.

The running sum lives in `OUT.partial.safetensors` with `OUT.partial.json` (which batches are done, and
what the run is: model weights, data, settings), both written atomically after every batch. Rerunning the
same command continues after the last finished batch; any other run starts over. Summation order is the
batch order either way, so a resumed run gives the same scores as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from circuitlab.circuit import ModelInfo
from circuitlab.edges.circuit import EdgeCircuit, EdgeScores
from circuitlab.edges.evaluate import ABLATIONS, faithfulness_curve, writer_means
from circuitlab.edges.forward import clean_answer_logprobs
from circuitlab.edges.graph import Graph
from circuitlab.edges.methods import METHOD_NAMES, METHODS
from circuitlab.edges.metrics import METRIC_NAMES, METRICS
from circuitlab.edges.pairs import Pair, encode_pairs
from circuitlab.errors import ConfigError
from circuitlab.io import read_json_object, write_bytes_atomic, write_json_atomic
from circuitlab.settings import check_settings, int_list, setting

TOP_FRACTION = 0.05  # the paper's circuits: the top 5 % of edges


@dataclass
class EdgesConfig:
    method: str = setting("eap-ig", "eap, eap-ig (gradients at interpolated inputs) or exact (one forward per "
                                    "edge: small models)", choices=METHOD_NAMES)
    metric: str = setting("logprob", "logprob (the answer's teacher-forced log-probability), logit-diff "
                                     "(needs corrupted_answer) or kl (to the clean run; not with eap)",
                          choices=METRIC_NAMES)
    steps: int = setting(5, "eap-ig: interpolation steps (the paper's code: 5)", minimum=1)
    batch_size: int = setting(8, "pairs per forward", minimum=1)
    top_n: int | None = setting(None, "keep the top N edges by |score| (default: the top 5 percent, the paper's)", minimum=1)
    threshold: float | None = setting(None, "keep the edges with |score| >= T instead", minimum=0)
    ablation: str = setting("corrupted", "what edges outside the circuit carry when it is evaluated",
                            choices=ABLATIONS)
    curve: tuple[int, ...] | None = setting(None, "faithfulness of the top-N circuits for these N, e.g. "
                                                  "100,500,1000", parse=int_list, metavar="N,...")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.top_n is not None and self.threshold is not None:
            raise ConfigError("threshold", "and --top-n both choose the circuit: give one")
        if self.metric == "kl" and self.method == "eap":
            raise ConfigError("metric", "kl has zero gradient at the clean run, so eap would score every edge 0: "
                                        "use --method eap-ig")
        if self.curve and any(n < 1 for n in self.curve):
            raise ConfigError("curve", "sizes must be positive")

    def rule(self, g: Graph) -> dict:
        if self.threshold is not None:
            return {"threshold": self.threshold}
        return {"top_n": self.top_n or max(1, round(TOP_FRACTION * g.n_edges))}


def _partial(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".partial.safetensors"), out.with_name(out.name + ".partial.json")


def batches_of(model, pairs: list[Pair], cfg: EdgesConfig) -> list:
    """The pairs as `PairBatch`es of `cfg.batch_size`, each pair checked (equal lengths) before any forward."""
    return [encode_pairs(model.tokenizer, pairs[i: i + cfg.batch_size], offset=i)
            for i in range(0, len(pairs), cfg.batch_size)]


def attribute(model, pairs: list[Pair], cfg: EdgesConfig, out: Path | None = None, task: str = "pairs",
              progress: bool = True, data_fingerprint: str | None = None) -> EdgeScores:
    """Every edge's score averaged over `pairs`; with `out`, resumable through its partial files."""
    g = Graph.of(model)
    metric, method = METRICS[cfg.metric], METHODS[cfg.method]
    batches = batches_of(model, pairs, cfg)
    if metric.name == "logit-diff":
        from circuitlab.edges.metrics import first_difference

        for b in batches:
            first_difference(b)
    info = ModelInfo.of(model)
    identity = {"model": asdict(info), "data": data_fingerprint, "n_pairs": len(pairs), "method": cfg.method,
                "metric": cfg.metric, "steps": cfg.steps if method.uses_steps else None,
                "batch_size": cfg.batch_size}
    total = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float32)
    done, seconds = 0, 0.0
    if out is not None:
        tensors, meta = _partial(out)
        if tensors.is_file() and meta.is_file():
            saved = read_json_object(meta)
            if saved.get("identity") == identity:
                total, done, seconds = load_file(str(tensors))["scores"], saved["batches_done"], saved["seconds"]
    bar = tqdm(total=len(batches), initial=done, desc=f"{cfg.method} {task}", unit="batch", disable=not progress)
    for i in range(done, len(batches)):
        start = time.perf_counter()
        b = batches[i].to(model.device)
        clean_lp = clean_answer_logprobs(model, b) if metric.needs_clean else None
        total += method.fn(model, b, metric, clean_lp, cfg.steps).cpu()
        seconds += time.perf_counter() - start
        if out is not None:
            write_bytes_atomic(tensors, save({"scores": total.contiguous()}))
            write_json_atomic(meta, {"identity": identity, "batches_done": i + 1, "seconds": seconds})
        bar.update(1)
    bar.close()
    return EdgeScores(info, task, cfg.method, cfg.metric, identity["steps"], len(pairs), total / len(pairs),
                      round(seconds, 3), data_fingerprint)


def edges_to(out: str | Path, model, pairs: list[Pair], cfg: EdgesConfig, task: str = "pairs",
             progress: bool = True, data_fingerprint: str | None = None) -> EdgeCircuit:
    """attribute -> select -> (faithfulness curve) -> save `out` (+ .safetensors) -> drop the partial files."""
    out = Path(out)
    scores = attribute(model, pairs, cfg, out, task, progress, data_fingerprint)
    circuit = EdgeCircuit.select(scores, **cfg.rule(scores.graph))
    if cfg.curve:
        circuit.curve = curve_of(model, pairs, cfg, scores)
    circuit.save(out)
    for p in _partial(out):
        p.unlink(missing_ok=True)
    return circuit


def curve_of(model, pairs: list[Pair], cfg: EdgesConfig, scores: EdgeScores) -> dict:
    metric = METRICS[cfg.metric]
    batches = [b.to(model.device) for b in batches_of(model, pairs, cfg)]
    lps = [clean_answer_logprobs(model, b) if metric.needs_clean else None for b in batches]
    means = writer_means(model, batches) if cfg.ablation == "mean" else None
    curve = faithfulness_curve(model, batches, lps, scores.scores.to(model.device), list(cfg.curve), metric,
                               cfg.ablation, means)
    return asdict(curve)
