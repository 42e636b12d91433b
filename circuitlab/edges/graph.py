"""The computational graph of a Llama-family model, as edge attribution sees it.

The residual stream before any reader is a sum of writers' outputs, so each (writer, reader) pair with
the writer earlier in the forward is an edge, and patching an edge means changing one term of one
reader's input:

- writers: the input embedding, every query head's output (its slice of `o_proj`, `attn.hook_result`),
  every MLP's output (`hook_mlp_out`);
- readers: every query head's q input, every KV group's k and v inputs (under GQA TransformerLens 4
  splits k/v per KV group, not per query head), every MLP's input, and the logits (the final residual).

Indices are fixed by the model's shape, so a score matrix [writer, reader] is a plain tensor, and names
follow the EAP-IG / MIB convention: nodes `input`, `a{l}.h{h}`, `m{l}`, `logits`; a KV group's reader
is `a{l}.g{g}` (circuitlab's own: one reader shared by the group's query heads), a head's own k/v reader (no GQA,
or `--kv per-head`) `a{l}.h{h}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Bool
from torch import Tensor

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int
    n_kv_heads: int

    @classmethod
    def of(cls, model) -> "Graph":
        """The graph of a `LoadedModel` (or anything with n_layers, n_heads, n_kv_heads)."""
        return cls(model.n_layers, model.n_heads, model.n_kv_heads)

    # -- writers: input, then per layer its heads and its MLP ------------------------------------------

    @property
    def n_writers(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    def head_writer(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_writer(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    # -- readers: per layer its q inputs, k inputs, v inputs, MLP input; then the logits -----------------

    @property
    def readers_per_layer(self) -> int:
        return self.n_heads + 2 * self.n_kv_heads + 1

    @property
    def n_readers(self) -> int:
        return self.n_layers * self.readers_per_layer + 1

    def qkv_readers(self, layer: int, which: str) -> slice:
        """The readers of `layer`'s q (one per query head), k or v inputs (one per KV group)."""
        base = layer * self.readers_per_layer
        start = {"q": base, "k": base + self.n_heads, "v": base + self.n_heads + self.n_kv_heads}[which]
        return slice(start, start + (self.n_heads if which == "q" else self.n_kv_heads))

    def mlp_reader(self, layer: int) -> int:
        return (layer + 1) * self.readers_per_layer - 1

    @property
    def logits_reader(self) -> int:
        return self.n_readers - 1

    # -- which writers each reader sees ------------------------------------------------------------------

    def upstream(self, reader: int) -> int:
        """Writers 0 .. upstream-1 feed `reader`: an attention input of layer l sees the input and layers
        < l; layer l's MLP also sees layer l's heads; the logits see every writer."""
        if reader == self.logits_reader:
            return self.n_writers
        layer, offset = divmod(reader, self.readers_per_layer)
        if offset == self.readers_per_layer - 1:  # the MLP
            return self.mlp_writer(layer)
        return self.head_writer(layer, 0)

    @cached_property
    def edge_mask(self) -> Bool[Tensor, "writer reader"]:
        """True where the writer feeds the reader: the graph's edges."""
        mask = torch.zeros(self.n_writers, self.n_readers, dtype=torch.bool)
        for r in range(self.n_readers):
            mask[: self.upstream(r), r] = True
        return mask

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    # -- names -------------------------------------------------------------------------------------------

    def writer_layer(self, w: int) -> int:
        """The layer a writer belongs to; the input embedding counts as layer 0 (the paper's rule)."""
        return 0 if w == 0 else (w - 1) // (self.n_heads + 1)

    def writer_name(self, w: int) -> str:
        if w == 0:
            return "input"
        layer, h = divmod(w - 1, self.n_heads + 1)
        return f"m{layer}" if h == self.n_heads else f"a{layer}.h{h}"

    @cached_property
    def writer_names(self) -> list[str]:
        return [self.writer_name(w) for w in range(self.n_writers)]

    def reader_name(self, r: int) -> str:
        """`a{l}.h{h}<q>`, `a{l}.g{g}<k>`, `a{l}.g{g}<v>`, `m{l}`, `logits`; without GQA (or with `--kv per-head`)
        a k/v reader is its head's own, `a{l}.h{h}<k>`, as EAP-IG and MIB name it."""
        if r == self.logits_reader:
            return "logits"
        layer, offset = divmod(r, self.readers_per_layer)
        if offset == self.readers_per_layer - 1:
            return f"m{layer}"
        if offset < self.n_heads:
            return f"a{layer}.h{offset}<q>"
        g, which = (offset - self.n_heads, "k") if offset < self.n_heads + self.n_kv_heads else \
            (offset - self.n_heads - self.n_kv_heads, "v")
        return f"a{layer}.{'h' if self.n_kv_heads == self.n_heads else 'g'}{g}<{which}>"

    @cached_property
    def reader_names(self) -> list[str]:
        return [self.reader_name(r) for r in range(self.n_readers)]

    def edge_name(self, w: int, r: int) -> str:
        return f"{self.writer_name(w)}->{self.reader_name(r)}"

    def reader_heads(self, r: int) -> list[str]:
        """The writer nodes a reader is an input of: one head for q, the group's heads for k and v, the MLP,
        or none for the logits."""
        if r == self.logits_reader:
            return []
        name = self.reader_name(r)
        if name.startswith("m"):
            return [name]
        layer = r // self.readers_per_layer
        if name.endswith("<q>"):
            return [name[:-3]]
        g = int(name.split(".", 1)[1][1:].split("<")[0])
        per = self.n_heads // self.n_kv_heads
        return [f"a{layer}.h{h}" for h in range(g * per, (g + 1) * per)]

    @cached_property
    def node_readers(self) -> dict[str, list[int]]:
        """Writer node name -> the readers that feed it (its q, its group's k and v; an MLP's input)."""
        out: dict[str, list[int]] = {}
        for r in range(self.n_readers):
            for node in self.reader_heads(r):
                out.setdefault(node, []).append(r)
        return out
