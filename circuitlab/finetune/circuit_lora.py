"""CircuitLoRA (Wang et al. 2025, arXiv 2502.11812): LoRA with a higher rank on the layers whose circuit
edges change most in a pilot fine-tuning run.

1. Edge change between the circuit before and after the pilot run: |s_after - s_before| for an edge in both
   circuits, the |score| of the one circuit it is in otherwise, 0 for an edge in neither (the paper's code,
   raw scores). A fine-tuned circuit's scores can be far larger than the original's (~48x in the paper's
   released graphs), so the raw change mostly measures where the after-circuit is strong; `normalise=True`
   first divides each circuit's scores by its total |score| over its kept edges.
2. Change per layer: the sum over edges of their source (writer) layer, the input embedding counting as
   layer 0 (`Graph.writer_layer`). Critical layers: the top k by change (ties: the lower layer).
3. Ranks: r_critical on every target module of a critical layer, r_other elsewhere, alpha = ratio x r; as a
   PEFT `LoraConfig` whose `rank_pattern` / `alpha_pattern` keys are anchored regexes, each checked to match
   modules (PEFT ignores a key that matches nothing, with a warning at most).

Equal budget (`matched_ranks`): every decoder layer of a Llama has the same target modules, so a LoRA's
parameter count is sum_l r_l x C (C = sum of in + out features of a layer's targets) and matches plain LoRA
at rank r exactly when sum_l r_l = L x r. Rule: r_other = max(1, floor(L r / (k ratio + L - k))) with
ratio = r_critical / r_other (the paper's 4: 16/64, 8/32); the rest, L r - (L - k) r_other, is shared
equally by the k critical layers, the remainder going as +1 to the most changed ones first.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from circuitlab.edges.change import check_same_shape, layer_change
from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.finetune.config import PEFT_TARGETS, TrainConfig

DEFAULT_CRITICAL, DEFAULT_RANK_CRITICAL, DEFAULT_RANK_OTHER, DEFAULT_ALPHA_RATIO = 5, 64, 16, 2.0
PAPER_RANK_RATIO = 4  # r_critical / r_other in the paper's runs (16/64, 8/32)


def critical_layers(per_layer: list[float], k: int = DEFAULT_CRITICAL) -> list[int]:
    """The k layers of most change, most changed first (ties: the lower layer)."""
    if not 1 <= k <= len(per_layer):
        raise ConfigError("critical_layers", f"must be between 1 and the model's {len(per_layer)} layers, got {k}")
    return sorted(range(len(per_layer)), key=lambda layer: (-per_layer[layer], layer))[:k]


@dataclass
class CircuitChange:
    """How the circuit moved in the pilot run, and the layers CircuitLoRA gives the higher rank."""

    per_layer: list[float]  # summed edge change by source layer
    critical: list[int]  # most changed first
    normalised: bool  # each circuit's scores divided by its total |score| over kept edges first

    @classmethod
    def of(cls, before: EdgeCircuit, after: EdgeCircuit, k: int = DEFAULT_CRITICAL,
           normalise: bool = False) -> "CircuitChange":
        per_layer = layer_change(before, after, normalise)
        return cls(per_layer, critical_layers(per_layer, k), normalise)


# -- ranks -------------------------------------------------------------------------------------------------


def layer_ranks(n_layers: int, critical: list[int], r_critical: int, r_other: int) -> list[int]:
    return [r_critical if layer in critical else r_other for layer in range(n_layers)]


def matched_ranks(n_layers: int, critical: list[int], r: int, ratio: float = PAPER_RANK_RATIO) -> list[int]:
    """Ranks whose sum is n_layers x r, so the LoRA has plain LoRA's parameter count at rank r exactly (rule:
    module docstring). `critical`: most changed first, which is the order the remainder goes in."""
    k, budget = len(critical), n_layers * r
    if k == n_layers:
        return [r] * n_layers
    other = max(1, int(budget // (k * ratio + n_layers - k)))
    share, extra = divmod(budget - (n_layers - k) * other, k)
    ranks = [other] * n_layers
    for i, layer in enumerate(critical):
        ranks[layer] = share + (1 if i < extra else 0)
    return ranks


# -- the PEFT config ---------------------------------------------------------------------------------------


def layer_key(layer: int, targets: tuple[str, ...] = PEFT_TARGETS) -> str:
    """A rank_pattern key for the target modules of one decoder layer. PEFT matches a key as
    `re.match(rf"(.*\\.)?({key})$", module_name)`: anchored at the end, and at a dot or the start, so
    `layers\\.1\\.` can never match layers.10 or layers.11."""
    return rf"layers\.{layer}\.[^.]+\.(?:{'|'.join(map(re.escape, targets))})"


def target_names(hf_model, targets: tuple[str, ...] = PEFT_TARGETS) -> list[str]:
    """The modules PEFT wraps for a `target_modules` list: Linear layers named (or ending in .)<target>."""
    return [name for name, m in hf_model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def check_patterns(module_names: list[str], patterns: dict[str, object]) -> None:
    """Refuse a pattern key that matches none of `module_names` (PEFT would silently use the default)."""
    for key in patterns:
        if not any(re.match(rf"(.*\.)?({key})$", name) for name in module_names):
            raise CircuitlabError(f"LoRA rank pattern {key!r} matches no target module of the model "
                                  f"(e.g. {module_names[0] if module_names else 'none found'})")


def lora_config(hf_model, ranks: list[int], alpha_ratio: float = DEFAULT_ALPHA_RATIO,
                targets: tuple[str, ...] = PEFT_TARGETS):
    """A `LoraConfig` giving layer l's target modules rank ranks[l] and alpha alpha_ratio x ranks[l]: the
    most common rank as `r` (ties: the lower), one pattern key per layer of another rank."""
    from peft import LoraConfig

    names = target_names(hf_model, targets)
    n_layers = hf_model.config.num_hidden_layers
    if len(ranks) != n_layers:
        raise CircuitlabError(f"{len(ranks)} layer ranks for a model of {n_layers} layers")
    counts = Counter(ranks)
    r = min(counts, key=lambda x: (-counts[x], x))
    rank_pattern = {layer_key(layer, targets): rank for layer, rank in enumerate(ranks) if rank != r}
    alpha_pattern = {key: alpha_ratio * rank for key, rank in rank_pattern.items()}
    check_patterns(names, rank_pattern)
    return LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha_ratio * r, lora_dropout=0.0,
                      target_modules=list(targets), rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)


def lora_param_count(hf_model, ranks: list[int], targets: tuple[str, ...] = PEFT_TARGETS) -> int:
    """LoRA's parameters with these layer ranks: r x (in + out) per target module (A is r x in, B out x r)."""
    modules, total = dict(hf_model.named_modules()), 0
    for name in target_names(hf_model, targets):
        layer = re.search(r"layers\.(\d+)\.", name)
        if layer is None:
            raise CircuitlabError(f"target module {name} is in no decoder layer")
        total += ranks[int(layer.group(1))] * (modules[name].in_features + modules[name].out_features)
    return total


# -- the method --------------------------------------------------------------------------------------------


@dataclass
class CircuitLoRAPlan:
    """What `finetune --method circuit-lora` trains: the change it read, and the ranks that follow."""

    change: CircuitChange
    ranks: list[int]  # per layer
    alpha_ratio: float
    matched_rank: int | None  # plain LoRA's rank whose parameter count this matches, if asked
    before: str
    after: str
    targets: tuple[str, ...] = PEFT_TARGETS

    def lora_config(self, hf_model):
        return lora_config(hf_model, self.ranks, self.alpha_ratio, self.targets)

    def record(self, hf_model) -> dict:
        """For the run's result.json."""
        return {**asdict(self.change), "ranks": self.ranks, "alpha_ratio": self.alpha_ratio,
                "matched_rank": self.matched_rank, "lora_params": lora_param_count(hf_model, self.ranks, self.targets),
                "circuit_before": self.before, "circuit_after": self.after, "targets": list(self.targets)}


def load_circuit(path: str | Path, field: str) -> EdgeCircuit:
    from circuitlab.edges.mib import load_edge_circuit

    if not Path(path).is_file():
        raise ConfigError(field, f"{path}: edge circuit not found")
    return load_edge_circuit(path)


def plan(cfg: TrainConfig, dims=None) -> CircuitLoRAPlan:
    """Read and check `cfg`'s two circuits (against the run's model dimensions `dims`, when given) and
    choose the ranks: all before any model is loaded."""
    before = load_circuit(cfg.circuit_before, "circuit_before")
    after = load_circuit(cfg.circuit_after, "circuit_after")
    check_same_shape(before, after)
    if dims is not None and before.scores.model.dims != dims:
        m = before.scores.model
        raise CircuitlabError(f"the edge circuits are of {m.name} ({m.dims}), not of {cfg.model} ({dims})")
    change = CircuitChange.of(before, after, cfg.critical_layers or DEFAULT_CRITICAL, cfg.normalise_change)
    n_layers = len(change.per_layer)
    if cfg.match_lora_rank is not None:
        ranks = matched_ranks(n_layers, change.critical, cfg.match_lora_rank)
    else:
        ranks = layer_ranks(n_layers, change.critical, cfg.rank_critical or DEFAULT_RANK_CRITICAL,
                            cfg.rank_other or DEFAULT_RANK_OTHER)
    return CircuitLoRAPlan(change, ranks, cfg.alpha_ratio or DEFAULT_ALPHA_RATIO, cfg.match_lora_rank,
                           str(cfg.circuit_before), str(cfg.circuit_after))
