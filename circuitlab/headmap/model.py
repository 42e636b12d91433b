"""HeadMapModel: one HeadMapLayer per circuit layer, and the two ways to wire them into a forward pass.

- On a TransformerBridge, by hook names: read `blocks.{l}.attn.hook_z` ([batch, pos, head, d_head],
  the input of W_O) and add the map's output to `blocks.{l}.hook_attn_out` (variant "mha", Eq. 8) or to
  `blocks.{l}.hook_resid_post` (variant "hs", Eq. 7: after the MLP, so the MLP does not read it).
- On a plain Hugging Face model, by torch module hooks: a forward pre-hook on `self_attn.o_proj`
  reads z (its input, reshaped to [.., head, d_head]) and a forward hook adds the output to
  `self_attn`'s output ("mha") or to the decoder layer's output ("hs").

Both call the same HeadMapLayer, so they compute the same thing by construction. This module imports
no TransformerLens: the bridge wiring only uses the bridge object it is given.
"""

from __future__ import annotations

import contextlib
import torch
from einops import rearrange
from torch import nn

from circuitlab.errors import CircuitlabError
from circuitlab.headmap.config import HeadMapConfig
from circuitlab.headmap.layer import HeadMapLayer
from circuitlab.models.identity import ModelDims
from circuitlab.models.llama import decoder_layers


class HeadMapModel(nn.Module):
    """The adapter: `layers[str(l)]` maps layer l's selected heads into the residual stream."""

    def __init__(self, config: HeadMapConfig, dims: ModelDims):
        super().__init__()
        config.check(dims)
        self.config = config
        self.dims = dims
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.layers = nn.ModuleDict(
                {
                    str(layer): HeadMapLayer(heads, dims.d_head, dims.d_model, config.rank, config.scaling)
                    for layer, heads in config.heads.items()
                }
            )
        self._z: dict[int, torch.Tensor] = {}  # selected heads' outputs, from the read hook to the write hook
        self._handles: list = []
        self._wired = False

    @classmethod
    def for_model(cls, config: HeadMapConfig, hf_config) -> "HeadMapModel":
        return cls(config, ModelDims.of_config(hf_config))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- the math shared by both wirings ---------------------------------------------------------

    def _read(self, layer: int, z: torch.Tensor) -> None:
        m = self.layers[str(layer)]
        self._z[layer] = m.select(z.to(m.down.weight.device, m.down.weight.dtype))

    def _delta(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        z_sel = self._z.pop(layer, None)
        if z_sel is None:
            raise RuntimeError(f"HeadMap layer {layer}: the output hook fired before W_O's input was read")
        return self.layers[str(layer)](z_sel).to(like.device, like.dtype)

    def _target(self) -> str:
        return "hook_attn_out" if self.config.variant == "mha" else "hook_resid_post"

    def _claim(self) -> None:
        if self._wired:
            raise CircuitlabError("this HeadMap adapter is already wired into a model; detach it first")
        self._wired = True
        self._z.clear()

    # -- wiring 1: TransformerBridge hook names ----------------------------------------------------

    def bridge_hooks(self) -> list[tuple[str, object]]:
        """(hook name, fn) pairs for `bridge.hooks(fwd_hooks=...)`."""
        hooks = []
        for layer in self.config.heads:

            def read(z, hook, layer=layer):
                self._read(layer, z)
                return z

            def write(out, hook, layer=layer):
                return out + self._delta(layer, out)

            hooks.append((f"blocks.{layer}.attn.hook_z", read))
            hooks.append((f"blocks.{layer}.{self._target()}", write))
        return hooks

    @contextlib.contextmanager
    def on_bridge(self, bridge):
        """Active on `bridge` (and on its patched HF model, which runs the same hooks) inside the block."""
        self._claim()
        try:
            with bridge.hooks(fwd_hooks=self.bridge_hooks()):
                yield self
        finally:
            self._wired = False
            self._z.clear()

    # -- wiring 2: plain Hugging Face model, torch module hooks -----------------------------------

    def attach_hf(self, hf_model) -> None:
        """Register module hooks on a plain HF causal LM; undo with `detach_hf()`."""
        layers = decoder_layers(hf_model)
        if len(layers) != self.dims.n_layers:
            raise CircuitlabError(f"model has {len(layers)} decoder layers, adapter expects {self.dims.n_layers}")
        self._claim()
        d_head = self.dims.d_head
        for layer in self.config.heads:
            block = layers[layer]
            attn = block.self_attn

            def read(module, args, layer=layer):
                self._read(layer, rearrange(args[0], "... (h d) -> ... h d", d=d_head))

            def write(module, args, output, layer=layer):
                if isinstance(output, tuple):
                    return (output[0] + self._delta(layer, output[0]), *output[1:])
                return output + self._delta(layer, output)

            self._handles.append(attn.o_proj.register_forward_pre_hook(read))
            target = attn if self.config.variant == "mha" else block
            self._handles.append(target.register_forward_hook(write))

    def detach_hf(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._wired = False
        self._z.clear()
