"""What a fine-tuning run is: the one table of methods, `TrainConfig` (checked when made: everything that
decides the result) and `RunOptions` (how the run is carried out: not part of the result).

A method is a HeadMap variant, a PEFT tuner, or both (the paper's "HeadMap + LoRA (V, U, D)").
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import NamedTuple

from circuitlab.core.errors import ConfigError
from circuitlab.models.device import DEFAULT_DTYPE, DTYPES, cuda_available
from circuitlab.models.names import EMBEDDED
from circuitlab.core.protocol import DEFAULT_PROTOCOL, PROTOCOL_NAMES, Protocol, get_protocol
from circuitlab.core.settings import check_settings, setting
from circuitlab.headmap.variant import Variant
from circuitlab.tasks.docs import SEPARATORS


class Method(NamedTuple):
    """A fine-tuning method and everything the rest of circuitlab asks of it (never its name)."""

    variant: Variant | None  # HeadMap's variant: MHA (Eq. 8) or HS (Eq. 7)
    tuner: str | None  # PEFT tuner: "lora" or "dora"
    label: str  # its row name in the Table-1-style table
    trains: bool = True  # False: the base model, evaluated zero-shot
    edge_ranks: bool = False  # CircuitLoRA: LoRA's rank per layer from two edge circuits (`circuit_lora`)

    @property
    def uses_heads(self) -> bool:
        """Whether it maps a circuit's heads (HeadMap, alone or with LoRA/DoRA)."""
        return self.variant is not None

    @property
    def mergeable(self) -> bool:
        """Whether its adapter folds into the model's weights (HeadMap-HS adds after the MLP: it cannot)."""
        return self.variant is None or self.variant.mergeable


METHODS: dict[str, Method] = {
    "base": Method(None, None, "Base (zero-shot)", trains=False),
    "headmap-mha": Method(Variant.MHA, None, "HeadMap-MHA"),
    "headmap-hs": Method(Variant.HS, None, "HeadMap-HS"),
    "lora": Method(None, "lora", "LoRA"),
    "dora": Method(None, "dora", "DoRA"),
    "headmap-mha+lora": Method(Variant.MHA, "lora", "HeadMap-MHA + LoRA (V,U,D)"),
    "headmap-hs+lora": Method(Variant.HS, "lora", "HeadMap-HS + LoRA (V,U,D)"),
    "headmap-mha+dora": Method(Variant.MHA, "dora", "HeadMap-MHA + DoRA (V,U,D)"),
    "headmap-hs+dora": Method(Variant.HS, "dora", "HeadMap-HS + DoRA (V,U,D)"),
    "circuit-lora": Method(None, "lora", "CircuitLoRA", edge_ranks=True),
}
# TrainConfig's fields that only CircuitLoRA reads.
CIRCUIT_LORA_FIELDS = ("circuit_before", "circuit_after", "critical_layers", "rank_critical", "rank_other",
                       "match_lora_rank", "alpha_ratio", "normalise_change")
HEAD_MODES = ("circuit", "random", "redundant", "anti")
PEFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
PEFT_TARGETS_WITH_HEADMAP = ("v_proj", "up_proj", "down_proj")  # the paper's "HeadMap + LoRA (V, U, D)"
HEADMAP_LR, PEFT_LR = 1e-3, 2e-4  # the paper's learning rates (Section 6)
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that decides a run's result (the run directory refuses a different one)."""

    model: str = setting(EMBEDDED, "alias, hub id or local directory")
    task: str = setting(None, "task name (see `circuitlab tasks`) or a custom .jsonl file")
    method: str = setting(None, "base = zero-shot, no training", choices=tuple(METHODS))
    heads: str = setting("circuit", "the circuit's heads, random heads, random heads outside the circuit, or "
                                     "the anti-circuit (each layer's lowest-scoring heads)",
                         choices=HEAD_MODES)
    heads_per_layer: int | None = setting(None, "heads per layer for random/redundant/anti (default: the circuit's)",
                                          minimum=1)
    circuit: str | None = setting(None, "circuit JSON for HeadMap's heads (may come from another task); "
                                        "default: locate one on the training docs")
    rank: int = setting(32, "HeadMap and LoRA/DoRA rank r", minimum=1)
    scaling: float = setting(1.0, "HeadMap output scale s (1 = the paper's equations)")
    lora_alpha: float = setting(64.0, "LoRA/DoRA alpha")
    lr: float | None = setting(None, f"learning rate (default: {HEADMAP_LR:g} HeadMap, {PEFT_LR:g} LoRA/DoRA)",
                               minimum=0)
    lr_peft: float | None = setting(None, f"learning rate of the LoRA/DoRA part of a combination "
                                          f"(default: {PEFT_LR:g})", minimum=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", minimum=0)
    batch_size: int = setting(16, "documents per optimizer step", minimum=1)
    micro_batch_size: int | None = setting(None, "gradient accumulation: forward this many docs at a time",
                                           minimum=1)
    epochs: int = setting(2, "passes over the training docs", minimum=1)
    warmup_steps: int = setting(100, "linear warm-up steps", minimum=0)
    max_len: int = setting(512, "cut training texts at this many tokens", minimum=1)
    max_train: int | None = setting(None, "train on the first N documents of the train split", minimum=1)
    train_split: str = setting("train", "split to train on")
    eval_split: str | None = setting(None, "default: the task's evaluation split; when it is the train split, "
                                           "the documents after the training ones are evaluated")
    eval_limit: int | None = setting(None, "evaluate only the first N evaluation documents", minimum=1)
    seed: int = setting(0, "seeds data order, initialisation and (unless --heads-seed) random heads")
    heads_seed: int | None = setting(None, "seeds the random/redundant head draw alone (default: --seed), so two "
                                           "head sets can train with one seed (a study's balanced seeds)", minimum=0)
    dtype: str = setting(DEFAULT_DTYPE, "precision of the model's weights", choices=tuple(DTYPES))
    protocol: str = setting(DEFAULT_PROTOCOL, "paper (the paper's text) or official (its code: EOS-terminated texts, "
                                              "held-out loss and best checkpoint, clipping at 1.0, Down init a=0)",
                            choices=PROTOCOL_NAMES)
    eval_every: int | None = setting(None, "held-out loss every N steps, best checkpoint restored "
                                           "(default: the protocol's; official 200)", minimum=1)
    # CircuitLoRA (`--method circuit-lora`): None = unset, so other methods can refuse them.
    circuit_before: str | None = setting(None, "circuit-lora: edge circuit of the model before the pilot run")
    circuit_after: str | None = setting(None, "circuit-lora: edge circuit of the pilot-tuned model")
    critical_layers: int | None = setting(None, "circuit-lora: how many layers of most edge change get the "
                                                "higher rank (default 5)", minimum=1)
    rank_critical: int | None = setting(None, "circuit-lora: LoRA rank on critical layers (default 64)", minimum=1)
    rank_other: int | None = setting(None, "circuit-lora: LoRA rank on the other layers (default 16)", minimum=1)
    match_lora_rank: int | None = setting(None, "circuit-lora: choose the ranks (critical = 4 x other) so the "
                                                "parameter count equals plain LoRA's at this rank", minimum=1)
    alpha_ratio: float | None = setting(None, "circuit-lora: LoRA alpha = this x rank (default 2)", minimum=0)
    normalise_change: bool = setting(False, "circuit-lora: divide each circuit's scores by its total |score| "
                                            "before taking the edge change")
    loss_on: str = setting("text", "text: every token of the training text (HeadMap's protocols); answer: the "
                                   "answer's tokens only (CircuitLoRA's code)", choices=("text", "answer"))
    separator: str = setting("task", "between prompt and answer, in training and evaluation: task (as the task "
                                     "writes it, a space) or newline (prompt + \"\\n\" + answer, CircuitLoRA's "
                                     "code)", choices=SEPARATORS)
    mixed_precision: str = setting("no", "autocast the forward pass (bf16: CUDA or CPU, fp16: CUDA); weights "
                                         "keep --dtype",
                                   choices=MIXED_PRECISION)

    def __post_init__(self) -> None:
        for name in ("task", "method"):
            if getattr(self, name) is None:
                raise ConfigError(name, "is required")
        check_settings(self)
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError("batch_size", f"{self.batch_size} is not a multiple of micro_batch_size "
                                             f"{self.micro_batch_size}")
        self._check_circuit_lora()
        self._check_read_by_method()
        if self.heads_seed is not None and self.heads not in ("random", "redundant"):
            raise ConfigError("heads_seed", f"seeds a random head draw; --heads {self.heads} draws none")
        if self.eval_every is not None and not self.rules.held_out:
            raise ConfigError("eval_every", f"needs held-out data, which protocol {self.protocol} has not")

    def _check_circuit_lora(self) -> None:
        if not self.spec.edge_ranks:
            given = [n for n in CIRCUIT_LORA_FIELDS if getattr(self, n) not in (None, False)]
            if given:
                raise ConfigError(given[0], "is for --method circuit-lora only")
            return
        for name in ("circuit_before", "circuit_after"):
            if getattr(self, name) is None:
                raise ConfigError(name, "is required by --method circuit-lora")
        if self.match_lora_rank is not None and (self.rank_critical or self.rank_other):
            raise ConfigError("match_lora_rank", "chooses the ranks itself: leave out --rank-critical and --rank-other")

    def _check_read_by_method(self) -> None:
        """Refuse a head option for a method that maps no heads, and a second learning rate for a method with
        one part: ignored, it would still be written into config.json and part the run's identity."""
        if not self.spec.uses_heads:
            given = [n for n in ("heads_per_layer", "circuit", "heads_seed") if getattr(self, n) is not None]
            given += ["heads"] if self.heads != "circuit" else []
            if given:
                raise ConfigError(given[0], f"chooses HeadMap's heads; --method {self.method} maps none")
        if self.lr_peft is not None and not (self.spec.uses_heads and self.spec.tuner):
            raise ConfigError("lr_peft", f"is the LoRA/DoRA rate of a HeadMap + LoRA/DoRA method; --method "
                                         f"{self.method} has one rate: --lr")

    @property
    def draw_seed(self) -> int:
        """The seed of the random/redundant head draw."""
        return self.seed if self.heads_seed is None else self.heads_seed

    @property
    def rules(self) -> Protocol:
        return get_protocol(self.protocol)

    @property
    def eval_steps(self) -> int | None:
        """Steps between held-out evaluations (and checkpoints), or None: no held-out data."""
        return (self.eval_every or self.rules.eval_every) if self.rules.held_out else None

    @property
    def spec(self) -> Method:
        """The method's entry in the table: what it does."""
        return METHODS[self.method]

    @property
    def variant(self) -> Variant | None:
        return self.spec.variant

    @property
    def tuner(self) -> str | None:
        return self.spec.tuner

    @property
    def headmap_lr(self) -> float:
        return self.lr if self.lr is not None else HEADMAP_LR

    @property
    def peft_lr(self) -> float:
        if self.variant is None:
            return self.lr if self.lr is not None else PEFT_LR
        return self.lr_peft if self.lr_peft is not None else PEFT_LR

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def defaults(cls) -> dict:
        """The default of every field that has one (a config.json written before a field existed
        meant its default)."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class RunOptions:
    """How a run trains, not what it computes: a run directory may be resumed with other values."""

    save_every: int | None = setting(None, "keep a checkpoint (a PEFT adapter directory) every K steps "
                                           "(default: one per epoch, only the last kept)", minimum=1)
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory)")

    def __post_init__(self) -> None:
        check_settings(self)


def check_run(cfg: TrainConfig, opts: RunOptions, device) -> None:
    """What needs the options and the device together, checked before anything is loaded or written.
    `device`: where the model trains (None: dispatched over devices, CUDA ones if there are any)."""
    cuda = cuda_available() if device is None else str(device).startswith("cuda")
    if cfg.mixed_precision == "fp16" and not cuda:  # torch autocasts the CPU to bf16 (fast where it has AMX)
        raise ConfigError("mixed_precision", f"fp16 needs a CUDA device; the model is on {device} (bf16 runs there)")
    every = cfg.eval_steps
    if opts.save_every and every and opts.save_every % every:
        raise ConfigError("save_every", f"{opts.save_every} must be a multiple of the evaluation interval {every} "
                                        "(the best checkpoint is chosen among the evaluated ones)")
