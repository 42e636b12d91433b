"""The one implementation of HeadMap's map, `s * Up(Down(z_sel))`, and the PEFT layers that place it.

- `HeadMapLayer`: the map of one layer (Down, Up, which heads, s), held by the PEFT layers below.
- `HeadMapLinear` (a PEFT tuner layer) wraps a decoder layer's `self_attn.o_proj`. Its input is z,
  the heads' outputs side by side ([.., head * d_head]), so it computes the map from its own input.
  Variant "mha" (Eq. 8) adds the map to its own output, which is the attention block's output; that
  is linear in z, so it merges into o_proj. Variant "hs" (Eq. 7) must add it after the MLP instead,
  so the layer hands it to
- `HeadMapSink`, which wraps the same decoder layer's `mlp.down_proj` and adds it to the MLP's output.
  A Llama-family decoder layer returns `residual + mlp(...)` with `mlp(...) = down_proj(...)`, so this
  is the decoder layer's output plus the map (up to the order of one float addition). Wrapping the
  decoder layer itself would hide every Linear inside it from a LoRA injected next to HeadMap.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Float
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import Tensor, nn

from circuitlab.core.errors import CircuitlabError
from circuitlab.headmap.variant import Variant
from circuitlab.models.identity import ModelDims
from circuitlab.models.llama import decoder_layers

HS_CANNOT_MERGE = (
    "the hidden-state variant (headmap-hs, Eq. 7) adds its output to the residual stream after the MLP, "
    "where no weight of the model can absorb it, so it cannot be merged or written as a LoRA; "
    "keep it as an adapter (peft.PeftModel.from_pretrained, or circuitlab.headmap.load(model, DIR)) instead"
)


class HeadMapLayer(nn.Module):
    """Down (n*d_head -> r) and Up (r -> d_model), both with bias.

    Down starts Kaiming-uniform and Up (weight and bias) at zero, as in the paper's code, so the
    layer outputs exactly zero and the model is unchanged at step 0 while Up still gets gradients.
    (The paper's text states the opposite initialisation; with Down at zero Up would get no gradient.)
    """

    def __init__(self, heads: list[int], d_head: int, d_model: int, rank: int, scaling: float = 1.0,
                 init_a: float = math.sqrt(5)):
        super().__init__()
        self.d_head = d_head
        self.scaling = scaling
        self.init_a = init_a  # Kaiming's negative slope for Down: sqrt(5) = nn.Linear's, 0 = the official code's
        # Non-persistent: the state dict holds only Down and Up; the heads live in the config.
        self.register_buffer("heads", torch.tensor(list(heads), dtype=torch.long), persistent=False)
        self.down = nn.Linear(len(heads) * d_head, rank)
        self.up = nn.Linear(rank, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.down.weight, a=self.init_a)  # bound sqrt(6 / ((1 + a^2) fan_in))
        bound = 1 / math.sqrt(self.down.in_features)
        nn.init.uniform_(self.down.bias, -bound, bound)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def select(self, z: Float[Tensor, "... head d_head"]) -> Float[Tensor, "... n_sel_d_head"]:
        """The selected heads' outputs, concatenated in head order: [h_{s_1}, ..., h_{s_n}]."""
        return rearrange(z[..., self.heads, :], "... n d -> ... (n d)")

    def forward(self, z_sel: Float[Tensor, "... n_sel_d_head"]) -> Float[Tensor, "... d_model"]:
        return self.scaling * self.up(self.down(z_sel))

    def from_o_proj_input(self, x: Float[Tensor, "... head_d_head"]) -> Float[Tensor, "... d_model"]:
        """The map of o_proj's input, whose last axis is the heads' outputs side by side."""
        return self(self.select(rearrange(x, "... (head d) -> ... head d", d=self.d_head)))

    def columns(self) -> Tensor:
        """o_proj input columns of the selected heads, in the order Down reads them."""
        d = self.d_head
        return torch.cat([torch.arange(h * d, (h + 1) * d) for h in self.heads.tolist()])

    @torch.no_grad()
    def folded(self) -> tuple[Float[Tensor, "d_model n_sel_d_head"], Float[Tensor, " d_model"]]:
        """(s * U D, s * (U b_D + b_U)) in float64: the map as a weight on z_sel plus a constant."""
        U, bU = self.up.weight.double(), self.up.bias.double()
        D, bD = self.down.weight.double(), self.down.bias.double()
        return self.scaling * U @ D, self.scaling * (U @ bD + bU)

    def extra_repr(self) -> str:
        return f"heads={self.heads.tolist()}, scaling={self.scaling}"


def build_maps(heads: dict[int, list[int]], dims: ModelDims, rank: int, scaling: float, seed: int,
               init_a: float = math.sqrt(5)) -> dict[int, HeadMapLayer]:
    """One map per layer, initialised from `seed` alone (layers in increasing order), so the same config
    always gives the same adapter."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {layer: HeadMapLayer(hs, dims.d_head, dims.d_model, rank, scaling, init_a)
                for layer, hs in sorted(heads.items())}


def give_attention_biases(model) -> None:
    """Give o_proj a bias to hold the merged map's constant term. Llama-style configs have one switch
    (`attention_bias`) for q, k, v and o, so all four get (zero) biases and the merged model saves and
    reloads with stock transformers. Works through PEFT wrappers (on their base layers)."""
    layers = decoder_layers(model)

    def base(module):
        return module.get_base_layer() if isinstance(module, BaseTunerLayer) else module

    if all(getattr(base(b.self_attn.o_proj), "bias", None) is not None for b in layers):
        return
    if getattr(model.config, "attention_bias", None) is not False:
        raise CircuitlabError(f"{type(model).__name__} has no o_proj bias to hold HeadMap's constant term")
    for block in layers:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            lin = base(getattr(block.self_attn, name))
            if lin.bias is None:
                w = lin.weight
                lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=w.dtype, device=w.device),
                                        requires_grad=w.requires_grad)
    model.config.attention_bias = True


class HeadMapLinear(nn.Module, BaseTunerLayer):
    """PEFT's wrapper of o_proj: o_proj(x), plus each active adapter's map of x, or, for a variant that adds it
    after the MLP (HS), the map in `outbox`, which the same decoder layer's HeadMapSink empties."""

    adapter_layer_names = ("headmap_map",)
    other_param_names = ("headmap_variant",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, hm: HeadMapLayer, variant: Variant | str,
                 inference_mode: bool = False) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.headmap_map = nn.ModuleDict()
        self.headmap_variant: dict[str, Variant] = {}
        self.outbox: dict[str, Tensor] = {}  # "hs" maps of the current forward pass, by adapter
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, hm, variant, inference_mode)

    def update_layer(self, adapter_name: str, hm: HeadMapLayer, variant: Variant | str,
                     inference_mode: bool = False) -> None:
        base = self.get_base_layer()
        if hm.down.in_features > base.in_features or hm.up.out_features != base.out_features:
            raise CircuitlabError(f"HeadMap map ({hm.down.in_features} -> {hm.up.out_features}) does not fit "
                                  f"o_proj ({base.in_features} -> {base.out_features})")
        self.headmap_map[adapter_name] = hm
        self.headmap_variant[adapter_name] = Variant.of(variant)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def forward(self, x: Float[Tensor, "... head_d_head"], *args: Any, **kwargs: Any) -> Float[Tensor, "... d_model"]:
        self.outbox.clear()
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name not in self.headmap_map or name in self.merged_adapters:
                continue
            hm = self.headmap_map[name]
            delta = hm.from_o_proj_input(self._cast_input_dtype(x, hm.down.weight.dtype)).to(result.dtype)
            if self.headmap_variant[name].after_mlp:
                self.outbox[name] = delta
            else:
                result = result + delta
        return result

    # -- merging (mergeable variants only: MHA) ---------------------------------------------------

    @torch.no_grad()
    def _fold(self, name: str, sign: int, check: bool = False) -> None:
        """o_proj.weight[:, cols] += sign * s U D and o_proj.bias += sign * s (U b_D + b_U), in float64."""
        base = self.get_base_layer()
        weight, const = self.headmap_map[name].folded()
        w = base.weight
        cols = self.headmap_map[name].columns().to(w.device)
        if base.bias is None:
            base.bias = nn.Parameter(torch.zeros(base.out_features, dtype=w.dtype, device=w.device), requires_grad=False)
        new_w = w[:, cols].double() + sign * weight.to(w.device)
        new_b = base.bias.double() + sign * const.to(w.device)
        if check and not (torch.isfinite(new_w).all() and torch.isfinite(new_b).all()):
            raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
        w[:, cols] = new_w.to(w.dtype)
        base.bias.copy_(new_b.to(base.bias.dtype))

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        names = [n for n in check_adapters_to_merge(self, adapter_names) if n in self.headmap_map]
        if any(not self.headmap_variant[n].mergeable for n in names):
            raise CircuitlabError(HS_CANNOT_MERGE)
        for name in names:
            self._fold(name, +1, check=safe_merge)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.headmap_map:
                self._fold(name, -1)

    def __repr__(self) -> str:
        return "headmap." + super().__repr__()


class HeadMapSink(nn.Module, BaseTunerLayer):
    """PEFT's wrapper of mlp.down_proj for a variant that adds after the MLP (HS): down_proj(x) plus what the
    decoder layer's HeadMapLinear put in its outbox (the tuner links `inbox` to that dict). It has no weights."""

    adapter_layer_names = ()
    other_param_names = ("headmap_sink",)

    def __init__(self, base_layer: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.headmap_sink: dict[str, bool] = {}  # the adapters whose maps arrive here
        self.inbox: dict[str, Tensor] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name)

    def update_layer(self, adapter_name: str) -> None:
        self.headmap_sink[adapter_name] = True

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result = self.base_layer(x, *args, **kwargs)
        for name in list(self.inbox):
            result = result + self.inbox.pop(name)
        return result

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        if any(n in self.headmap_sink for n in check_adapters_to_merge(self, adapter_names)):
            raise CircuitlabError(HS_CANNOT_MERGE)

    def unmerge(self) -> None:
        pass

    def __repr__(self) -> str:
        return "headmap." + super().__repr__()
