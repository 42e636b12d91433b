"""What an edge attribution run is asked to do, checked before any model loads; and the registries of its
methods and metrics, whose implementations (`methods`, `metrics`) are imported only when one is used.

Methods (`methods.py`): `eap` (the gradient at the clean run), `eap-ig` (the gradient averaged over
interpolated inputs), `exact` (one patched forward per edge). Metrics (`metrics.py`): `logprob` (the
answer's teacher-forced log-probability), `logit-diff` (answer minus corrupted answer), `kl` (to the clean
run; its gradient is zero there, so plain EAP cannot use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from circuitlab.core.errors import ConfigError
from circuitlab.core.lazy import load
from circuitlab.core.settings import check_settings, int_list, setting

TOP_FRACTION = 0.05  # the paper's circuits: the top 5 % of edges
ABLATIONS = ("corrupted", "zero", "mean")  # what edges outside a circuit carry when it is evaluated
IG_POINTS = ("left", "right")  # EAP-IG's Riemann sum: k = 0..m-1 or k = 1..m
KV_READERS = ("grouped", "per-head")  # under GQA: a k/v reader per KV group or per query head


@dataclass(frozen=True)
class Method:
    name: str
    target: str  # "module:function" computing one batch's scores
    uses_steps: bool = False

    @property
    def fn(self) -> Callable:
        return load(self.target)


@dataclass(frozen=True)
class Metric:
    name: str
    target: str  # "module:function": (logits, batch, clean log-probabilities) -> one value per pair
    needs_clean: bool = False  # reads the clean run's answer log-probabilities
    flat_at_clean: bool = False  # zero gradient at the clean point: useless with plain EAP

    def __call__(self, logits, batch, clean=None):
        return load(self.target)(logits, batch, clean)


METHODS = {m.name: m for m in (
    Method("eap", "circuitlab.edges.methods:eap"),
    Method("eap-ig", "circuitlab.edges.methods:integrated", uses_steps=True),
    Method("exact", "circuitlab.edges.methods:exact"),
)}
METRICS = {m.name: m for m in (
    Metric("logprob", "circuitlab.edges.metrics:logprob"),
    Metric("logit-diff", "circuitlab.edges.metrics:logit_diff"),
    Metric("kl", "circuitlab.edges.metrics:kl", needs_clean=True, flat_at_clean=True),
)}
METHOD_NAMES, METRIC_NAMES = tuple(METHODS), tuple(METRICS)


@dataclass
class EdgesConfig:
    method: str = setting("eap-ig", "eap, eap-ig (gradients at interpolated inputs) or exact (one forward per "
                                    "edge: small models)", choices=METHOD_NAMES)
    metric: str = setting("logprob", "logprob (the answer's teacher-forced log-probability), logit-diff "
                                     "(needs corrupted_answer) or kl (to the clean run; not with eap)",
                          choices=METRIC_NAMES)
    steps: int = setting(5, "eap-ig: interpolation steps (the paper's code: 5)", minimum=1)
    ig_points: str = setting("left", "eap-ig: the gradient at k/m of the way from the corrupted to the clean input "
                                     "for k = 0..m-1 (left: hannamw/EAP-IG since 13c0033, MIB) or k = 1..m (right: "
                                     "the paper's code, EAP-IG before)", choices=IG_POINTS)
    kv: str = setting("grouped", "GQA's k and v readers: grouped (one per KV group, TransformerLens 4's split) or "
                                 "per-head (one per query head, the EAP-IG library's ungrouped graph: the model "
                                 "runs as its multi-head equivalent)", choices=KV_READERS)
    batch_size: int = setting(8, "pairs per forward", minimum=1)
    top_n: int | None = setting(None, "keep the top N edges by |score| (default: the top 5 percent, the paper's)", minimum=1)
    threshold: float | None = setting(None, "keep the edges with |score| >= T instead", minimum=0)
    ablation: str = setting("corrupted", "what edges outside the circuit carry when it is evaluated",
                            choices=ABLATIONS)
    edges: str | None = setting(None, "score only these edges: an edge circuit (its kept edges), a MIB graph JSON "
                                      "circuitlab wrote, or a text file of edge names, one per line; the circuit "
                                      "is then these edges (exact on a real model: check a circuit's top edges)",
                                metavar="FILE")
    edges_top: int | None = setting(None, "with --edges FILE (an edge circuit): its top N edges by |score| instead "
                                          "of its kept edges", minimum=1)
    curve: tuple[int, ...] | None = setting(None, "faithfulness of the top-N circuits for these N, e.g. "
                                                  "100,500,1000", parse=int_list, metavar="N,...")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.top_n is not None and self.threshold is not None:
            raise ConfigError("threshold", "and --top-n both choose the circuit: give one")
        if METRICS[self.metric].flat_at_clean and self.method == "eap":
            raise ConfigError("metric", f"{self.metric} has zero gradient at the clean run, so eap would score "
                                        "every edge 0: use --method eap-ig")
        if self.edges_top is not None and self.edges is None:
            raise ConfigError("edges_top", "chooses from an --edges FILE: give one")
        if self.curve and any(n < 1 for n in self.curve):
            raise ConfigError("curve", "sizes must be positive")
        # a setting the run would not read is refused, not recorded as if it had acted (defaults cannot be told apart)
        if self.ablation != "corrupted" and not self.curve:
            raise ConfigError("ablation", "is read only when --curve evaluates circuits")
        if not METHODS[self.method].uses_steps:
            for name in ("steps", "ig_points"):
                if getattr(self, name) != self.__dataclass_fields__[name].default:
                    raise ConfigError(name, f"is read only by --method eap-ig, not {self.method}")

    def alphas(self) -> tuple[float, ...]:
        """Where along corrupted -> clean (0 -> 1) the method takes its gradients: eap at the clean run,
        eap-ig at `steps` points (`ig_points`), exact nowhere."""
        if self.method == "exact":
            return ()
        if not METHODS[self.method].uses_steps:
            return (1.0,)
        ks = range(self.steps) if self.ig_points == "left" else range(1, self.steps + 1)
        return tuple(k / self.steps for k in ks)

    def rule(self, n_edges: int, n_chosen: int | None = None) -> dict:
        """How the circuit is chosen from a graph of `n_edges` edges (of which `n_chosen` were scored, with
        --edges: by default all of them)."""
        if self.threshold is not None:
            return {"threshold": self.threshold}
        if n_chosen is not None:
            return {"top_n": min(self.top_n or n_chosen, n_chosen)}
        return {"top_n": self.top_n or max(1, round(TOP_FRACTION * n_edges))}


