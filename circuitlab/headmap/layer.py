"""The one implementation of HeadMap's map: `s * Up(Down(z_sel))` for one layer."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class HeadMapLayer(nn.Module):
    """Down (n*d_head -> r) and Up (r -> d_model), both with bias.

    Down starts Kaiming-uniform and Up (weight and bias) at zero, as in the paper's code, so the
    layer outputs exactly zero and the model is unchanged at step 0 while Up still gets gradients.
    (The paper's text states the opposite initialisation; with Down at zero Up would get no gradient.)
    """

    def __init__(self, heads: list[int], d_head: int, d_model: int, rank: int, scaling: float = 1.0):
        super().__init__()
        self.d_head = d_head
        self.scaling = scaling
        # Non-persistent: the state dict holds only Down and Up; the heads live in the config.
        self.register_buffer("heads", torch.tensor(list(heads), dtype=torch.long), persistent=False)
        self.down = nn.Linear(len(heads) * d_head, rank)
        self.up = nn.Linear(rank, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))  # nn.Linear's (and LoRA A's) default
        bound = 1 / math.sqrt(self.down.in_features)
        nn.init.uniform_(self.down.bias, -bound, bound)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def select(self, z: Float[Tensor, "... head d_head"]) -> Float[Tensor, "... n_sel_d_head"]:
        """The selected heads' outputs, concatenated in head order: [h_{s_1}, ..., h_{s_n}]."""
        return rearrange(z[..., self.heads, :], "... n d -> ... (n d)")

    def forward(self, z_sel: Float[Tensor, "... n_sel_d_head"]) -> Float[Tensor, "... d_model"]:
        return self.scaling * self.up(self.down(z_sel))

    def extra_repr(self) -> str:
        return f"heads={self.heads.tolist()}, scaling={self.scaling}"
