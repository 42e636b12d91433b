"""What a locating run is asked to do, checked before any model is loaded.

`LocateConfig` checks every field on its own when it is made (a bad value names its field); `plan`
then checks what depends on the model's dimensions (n and the layer range against its layers and
heads) and fills in the defaults that depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from circuitlab.circuits.circuit import Circuit, Sample
from circuitlab.core.errors import ConfigError
from circuitlab.circuits.heads import HeadMask
from circuitlab.locate.plan import Plan
from circuitlab.locate.strategies import STRATEGY_NAMES, Strategy, get_strategy
from circuitlab.models.identity import ModelDims, ModelIdentity
from circuitlab.core.protocol import DEFAULT_PROTOCOL, PROTOCOL_NAMES
from circuitlab.core.settings import check_int_or_auto, check_settings, int_list, int_or_auto, setting

MAX_BATCH_TOKENS = 4096  # padded tokens per forward, where "auto" cannot ask the device
ATTENTION = ("eager", "sdpa")  # how the engine computes attention
ABLATIONS = ("zero", "mean", "corrupted")  # what a masked head's z becomes (`circuitlab.locate.ablation`)
REFERENCE_DOCS = 64  # mean: reference docs by default


def parse_layers(text: str) -> tuple[int, int]:
    """"A-B" (inclusive) or "A" -> (first, last); the range is checked against a model in `plan`."""
    try:
        parts = [int(x) for x in text.split("-")]
        if len(parts) not in (1, 2):
            raise ValueError
    except ValueError:
        raise ValueError(f"must be A-B or A, got {text!r}") from None
    return (parts[0], parts[-1])


def default_heads_per_layer(n_heads: int) -> int:
    """8 for 32-head models (the paper), otherwise round(H/4), at least 1."""
    return 8 if n_heads == 32 else max(1, round(n_heads / 4))


@dataclass
class LocateConfig:
    strategy: str = setting("layer-conditioned", "which heads to select (docs/locating.md)", choices=lambda: STRATEGY_NAMES)
    n_per_layer: int | None = setting(None, "n heads per layer (default: 8 for 32-head models, else round(H/4))",
                                      minimum=1)
    seeds: tuple[int, ...] = setting((0,), "random/redundant: one selection per seed, e.g. 0,1,2 (the first "
                                     "one's heads are the circuit)", parse=int_list)
    layers: tuple[int, int] | None = setting(None, "locate only in layers A-B (inclusive; default: all)",
                                             parse=parse_layers, metavar="A-B")
    prescreen: int | None = setting(None, "rank heads by attribution patching, evaluate the top K exactly",
                                    minimum=1, metavar="K")
    max_batch_tokens: int | str = setting("auto", f"padded tokens per forward; auto: what half the free GPU memory "
                                                  f"holds on CUDA, {MAX_BATCH_TOKENS} elsewhere", parse=int_or_auto)
    attention: str = setting("eager", "how the engine computes attention: eager (the bridge's own code) or sdpa "
                                      "(PyTorch's fused kernel; the head masks still go in at hook_z)",
                             choices=ATTENTION)
    plain: bool = setting(False, "use the paper's plain algorithm (slow; for checking)")
    plain_batch_size: int | None = setting(None, "plain: samples per forward (default: all; 1 = Algorithm 1's "
                                           "loop over samples)", minimum=1)
    protocol: str = setting(DEFAULT_PROTOCOL, "paper: Eq. 5's loss on correctly predicted samples; official: the "
                                              "official code's (EOS-ended target, token-mean loss, no correctness "
                                              "filter; docs/protocols.md)", choices=PROTOCOL_NAMES)
    ablation: str = setting("zero", "what a masked head's z becomes: zero (the paper's), mean (its mean over "
                                    "--ablation-docs docs of --split that are not samples) or corrupted (its z in "
                                    "the run of the sample's corrupted prompt; tasks with clean/corrupted pairs)",
                            choices=ABLATIONS)
    ablation_docs: int = setting(REFERENCE_DOCS, "mean: how many reference docs", minimum=1, metavar="N")
    circuit: Circuit | None = field(default=None, metadata={"help": "redundant: the circuit whose heads are excluded"})
    reference: list[Sample] | None = field(default=None, metadata={
        "help": "mean: the reference docs, of which the first ablation_docs are used (the CLI: docs of the split "
                "that are not samples, `ablation.reference_samples`)"})

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        check_settings(self)
        check_int_or_auto(self, "max_batch_tokens")
        if not self.seeds:
            raise ConfigError("seeds", "needs at least one seed")
        if self.layers is not None:
            self.layers = (int(self.layers[0]), int(self.layers[-1]))
            if not 0 <= self.layers[0] <= self.layers[1]:
                raise ConfigError("layers", f"must be A-B with 0 <= A <= B, got {self.layers[0]}-{self.layers[1]}")
        if self.attention != "eager" and self.plain:
            raise ConfigError("attention", f"{self.attention} is the engine's; the plain algorithm runs the bridge as is")
        if self.prescreen is not None and self.plain:
            raise ConfigError("prescreen", "needs the engine (the plain algorithm evaluates every head)")
        if self.prescreen is not None and self.n_per_layer is not None and self.prescreen < self.n_per_layer:
            raise ConfigError("prescreen", f"must be at least n={self.n_per_layer} (the heads kept per layer), "
                                           f"got {self.prescreen}")
        if self.ablation == "mean" and self.reference is not None and len(self.reference) < self.ablation_docs:
            raise ConfigError("ablation_docs", f"{self.ablation_docs} is too many: only {len(self.reference)} "
                                               "reference docs were given")
        self._check_read_by_strategy()

    def _check_read_by_strategy(self) -> None:
        """Refuse a setting the strategy or the ablation would not read: a run that silently ignored it would be
        recorded with it. (A setting left at its default cannot be told from one not given, and changes nothing.)"""
        method = self.method
        if method.needs_circuit and self.circuit is None:
            raise ConfigError("circuit", f"is needed by strategy {self.strategy} (the circuit whose heads it avoids)")
        if self.circuit is not None and not method.needs_circuit:
            raise ConfigError("circuit", f"is read only by strategy redundant (the circuit whose heads it avoids), "
                                         f"not by {self.strategy}")
        if not method.seeded and self.seeds != (0,):
            raise ConfigError("seeds", f"draw the heads of strategies random and redundant; {self.strategy} "
                                       "draws none")
        if self.prescreen is not None and method.selected_by is None:
            raise ConfigError("prescreen", f"ranks the heads a strategy scores; {self.strategy} draws them")
        if self.ablation != "mean" and self.ablation_docs != REFERENCE_DOCS:
            raise ConfigError("ablation_docs", f"is read only by --ablation mean, not {self.ablation}")

    @property
    def reference_docs(self) -> list[Sample]:
        """mean: the reference docs used (the first ablation_docs of `reference`); other ablations: none."""
        return list(self.reference or [])[: self.ablation_docs] if self.ablation == "mean" else []

    @property
    def method(self) -> Strategy:
        return get_strategy(self.strategy)

    def plan(self, dims: ModelDims, model: ModelIdentity | None = None) -> Plan:
        """Check the fields against a model's dimensions and resolve the defaults that depend on
        them; the circuit of `redundant` is checked against `model` (its weights too, where the
        identity has a fingerprint)."""
        H, L = dims.n_heads, dims.n_layers
        n = self.n_per_layer if self.n_per_layer is not None else default_heads_per_layer(H)
        if n > H:
            raise ConfigError("n_per_layer", f"{n} out of range: the model has {H} heads per layer")
        first, last = self.layers if self.layers is not None else (0, L - 1)
        if last >= L:
            raise ConfigError("layers", f"{first}-{last} out of range: the model has layers 0-{L - 1}")
        if self.prescreen is not None and not n <= self.prescreen <= H:
            raise ConfigError("prescreen", f"{self.prescreen} must be between n={n} and the {H} heads per layer")
        exclude = self.excluded(model or ModelIdentity(None, dims))
        short = [la for la in range(first, last + 1) if H - len(exclude.at(la)) < n]
        if short:
            raise ConfigError("n_per_layer", f"{n} out of range: layer {short[0]} has only "
                                             f"{H - len(exclude.at(short[0]))} heads outside the circuit")
        screen = self.prescreen if self.prescreen is not None and self.prescreen < H else None
        return Plan(list(range(first, last + 1)), H, n, screen, self.seeds, exclude)

    def excluded(self, model: ModelIdentity) -> HeadMask:
        """The heads never drawn: `redundant`'s circuit, refused when it was located on another model than `model`
        (its dimensions; its weights too where `model` has a fingerprint, as a loaded model's identity has)."""
        if self.circuit is None or not self.method.needs_circuit:
            return HeadMask()
        self.circuit.validate(model)
        return self.circuit.mask
