"""HeadMap's configuration, a `peft.PeftConfig`: which heads feed the map, where its output goes, its size.

PEFT only accepts methods whose name is a member of its `PeftType` enum, and that enum is closed, so
this module adds `PeftType.HEADMAP` to it (`peft_type_member`) before the config class is defined;
`circuitlab.headmap` then registers the method with `peft.utils.register_peft_method`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from peft import PeftConfig
from peft.utils import PeftType

from circuitlab.core.errors import CircuitlabError
from circuitlab.headmap.variant import Variant
from circuitlab.models.identity import ModelDims, ModelIdentity


def peft_type_member(name: str) -> PeftType:
    """`PeftType[name]`, added to the enum first when PEFT does not have it.

    `register_peft_method` requires the name to be a `PeftType` member, and PEFT looks methods up by
    that member (the config's `peft_type`, also as the plain string read back from
    adapter_config.json: a `str` enum member hashes and compares as its value). Python offers no
    public way to extend an enum, so the member is made as `Enum` makes its own and entered into the
    same three tables (`_member_map_`, `_value2member_map_`, `_member_names_`)."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_, member._value_ = name, name
    member._sort_order_ = len(PeftType._member_names_)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)  # EnumType.__setattr__ refuses to set members
    return member


HEADMAP = peft_type_member("HEADMAP")


@dataclass
class HeadMapConfig(PeftConfig):
    """What a HeadMap adapter is; enough to rebuild it around a model of the right shape.

    Build it with keywords (PEFT's own fields come first in the dataclass). `from_dict` also reads
    circuitlab's earlier adapter files, which say `rank` for `r` and `seed` for `init_seed`.

    variant: a `Variant` (given as a member or its string; saved as the string). MHA adds the map's
        output to the attention block's output (paper Eq. 8), so the MLP reads it and it can be merged
        into o_proj; HS adds it to the decoder layer's output hidden state (Eq. 7: after the MLP, so only
        later layers read it; it cannot be merged). What follows from that is asked of the member.
    heads: layer -> query-head indices whose outputs (o_proj's input, per head) are mapped. JSON makes
        the layer keys strings; they become ints again here.
    r: width of the bottleneck Down (n*d_head -> r) / Up (r -> d_model), as LoRA's `r`.
    scaling: s in `s * Up(Down(z_sel))`. The paper's equations have no factor, i.e. s = 1, so that is
        the default; with Up initialised at zero a larger s only rescales Up's effective learning rate.
    init_seed: seeds Down's Kaiming-uniform initialisation, so an adapter is reproducible.
    init_a: the negative slope `a` of that initialisation (bound sqrt(6 / ((1 + a^2) fan_in))): sqrt(5),
        nn.Linear's and LoRA A's default, or 0, the official code's `kaiming_uniform_(weight)` (Down then
        starts sqrt(3) times larger). Saved so that adapter_config.json says how the adapter started.
    lora: keyword arguments of a `peft.LoraConfig` (or a LoraConfig) for LoRA/DoRA layers trained,
        saved, loaded and merged together with the map as one adapter (see `circuitlab.headmap.model`).
    target_modules: the modules HeadMap wraps; derived from `heads` when the adapter is injected
        (any given value is replaced), and saved only so that adapter_config.json says what was wrapped.
    modules_to_save: as in LoraConfig: further modules trained in full and saved with the adapter.
    base_model: the model the adapter was trained on (name, hub id, dimensions, weight fingerprint and a
        probe of sampled weights: `circuitlab.headmap.adapter.base_info`), so that loading it onto other
        weights is refused; None for an adapter made outside circuitlab.
    """

    variant: Variant = field(default=Variant.MHA, metadata={"help": "'mha' (Eq. 8, mergeable) or 'hs' (Eq. 7)"})
    heads: dict[int, list[int]] = field(default_factory=dict, metadata={"help": "layer -> query heads"})
    r: int = field(default=32, metadata={"help": "rank of Down/Up"})
    scaling: float = field(default=1.0, metadata={"help": "s in s * Up(Down(z_sel))"})
    init_seed: int = field(default=0, metadata={"help": "seed of Down's initialisation"})
    init_a: float = field(default=math.sqrt(5), metadata={"help": "Kaiming negative slope of Down's initialisation"})
    lora: dict | None = field(default=None, metadata={"help": "LoraConfig keyword arguments, trained alongside"})
    target_modules: list[str] | None = field(default=None, metadata={"help": "filled in from `heads`"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "as in LoraConfig"})
    base_model: dict | None = field(default=None, metadata={"help": "the model it was trained on"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = HEADMAP
        self.variant = Variant.of(self.variant)
        try:
            self.r, self.scaling, self.init_seed = int(self.r), float(self.scaling), int(self.init_seed)
            self.init_a = float(self.init_a)
            heads = {int(layer): sorted({int(h) for h in hs}) for layer, hs in dict(self.heads).items()}
        except (TypeError, ValueError) as e:
            raise CircuitlabError(f"malformed HeadMap config: {e}") from None
        if self.r < 1:
            raise CircuitlabError(f"HeadMap rank must be a positive integer, got {self.r}")
        self.heads = {layer: hs for layer, hs in sorted(heads.items()) if hs}
        if not self.heads:
            raise CircuitlabError("HeadMap needs at least one head")
        self.lora = _lora_kwargs(self.lora)

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_circuit(cls, circuit, variant: Variant | str = Variant.MHA, r: int = 32, model=None,
                     **kwargs) -> HeadMapConfig:
        """The config for a circuit's heads: a `circuitlab.circuits.circuit.Circuit`, a `HeadMask`, or a
        {layer: heads} mapping. A causal LM task type is the default (PEFT then wraps the model in
        `PeftModelForCausalLM`, which also generates).

        With `model` (the HF model it will be applied to, or a circuitlab model), a Circuit located on
        another model is refused in one line (`_check_circuit_model`: dimensions, and weights too for a model
        loaded with `load_model`)."""
        if model is not None and hasattr(circuit, "model"):
            _check_circuit_model(circuit, model)
        heads = getattr(circuit, "heads", circuit)
        if hasattr(heads, "as_dict"):  # HeadMask
            heads = heads.as_dict()
        kwargs.setdefault("task_type", "CAUSAL_LM")
        return cls(variant=variant, heads=dict(heads), r=r, **kwargs)

    @classmethod
    def from_dict(cls, d: dict) -> HeadMapConfig:
        """From a config dict in either spelling: PEFT's (`to_dict()`, adapter_config.json) or circuitlab's
        earlier adapter files (`rank`, `seed`; headmap_config.json); other keys (file format) are ignored."""
        try:
            missing = [key for key in ("variant", "heads") if key not in d]
            if missing:
                raise KeyError(missing[0])
            kwargs = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
            kwargs.setdefault("r", d.get("rank", 32))
            kwargs.setdefault("init_seed", d.get("seed", 0))
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CircuitlabError(f"malformed HeadMap config: {type(e).__name__}: {e}") from None

    def check(self, dims: ModelDims) -> None:
        """Refuse heads that do not exist in a model of these dimensions."""
        dims.check_heads(self.heads, "HeadMap head")


def _check_circuit_model(circuit, model) -> None:
    """Refuse `model` when `circuit` was located on another model: other dimensions always; other weights when
    `model` is a circuitlab model loaded with a TransformerBridge (`load_model`), the kind a circuit's weight
    fingerprint is taken on. A plain or HF model's state-dict names differ from a bridged one's, so its weights
    cannot be compared with that fingerprint (as in `finetune`, which checks dimensions only)."""
    if getattr(model, "bridge", None) is not None:
        circuit.validate(model)
        return
    hf = getattr(model, "hf_model", model)
    name = getattr(model, "name", None) or getattr(hf.config, "_name_or_path", None) or "this model"
    circuit.validate(ModelIdentity(name, ModelDims.of_config(hf.config)))


def _lora_kwargs(lora) -> dict | None:
    """LoraConfig keyword arguments as a JSON-able dict (what adapter_config.json stores): the fields
    of a given LoraConfig that differ from the defaults, or a dict checked by building the config."""
    if lora is None:
        return None
    from peft import LoraConfig

    if isinstance(lora, LoraConfig):
        default = LoraConfig().to_dict()
        skip = set(PeftConfig().to_dict())  # peft_type, task_type, versions: the HeadMap config's own
        lora = {k: v for k, v in lora.to_dict().items() if k not in skip and v != default.get(k)}
    try:
        lora = {k: sorted(v) if isinstance(v, set) else v for k, v in dict(lora).items()}
        LoraConfig(**lora)
    except (TypeError, ValueError) as e:
        raise CircuitlabError(f"HeadMap config: bad LoRA options: {str(e).splitlines()[0]}") from None
    return lora
