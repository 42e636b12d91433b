"""The bridge's hook points as the graph's writers and readers, and the three things done at them:
record writers' outputs, catch the gradient at readers' inputs, and patch readers' inputs.

TransformerLens splits what edges need when asked (`split_graph`): `attn.hook_result` gives each query
head's output, `hook_q_input` / `hook_k_input` / `hook_v_input` give each query head's (each KV group's)
own copy of the residual stream, `hook_mlp_in` the MLP's; the logits read `ln_final.hook_in`. Changing
one copy changes only its reader, which is what patching one edge means.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from einops import einsum
from jaxtyping import Bool, Float
from torch import Tensor

from circuitlab.edges.graph import Graph

Acts = Float[Tensor, "batch pos writer d_model"]


@dataclass(frozen=True)
class Point:
    """A hook point and the writers or readers start .. start+count-1 it carries (`heads`: a head axis)."""

    name: str
    start: int
    count: int
    heads: bool
    upstream: int = 0  # readers: writers 0 .. upstream-1 feed them

    def split(self, x: Tensor) -> Float[Tensor, "batch pos unit d_model"]:
        return x if self.heads else x[:, :, None]

    def join(self, x: Tensor) -> Tensor:
        return x if self.heads else x[:, :, 0]


def writer_points(g: Graph) -> list[Point]:
    pts = [Point("hook_embed", 0, 1, False)]
    for layer in range(g.n_layers):
        pts.append(Point(f"blocks.{layer}.attn.hook_result", g.head_writer(layer, 0), g.n_heads, True))
        pts.append(Point(f"blocks.{layer}.hook_mlp_out", g.mlp_writer(layer), 1, False))
    return pts


def reader_points(g: Graph) -> list[Point]:
    pts = []
    for layer in range(g.n_layers):
        for which in "qkv":
            s = g.qkv_readers(layer, which)
            pts.append(Point(f"blocks.{layer}.hook_{which}_input", s.start, s.stop - s.start, True, g.upstream(s.start)))
        r = g.mlp_reader(layer)
        pts.append(Point(f"blocks.{layer}.hook_mlp_in", r, 1, False, g.upstream(r)))
    pts.append(Point("ln_final.hook_in", g.logits_reader, 1, False, g.n_writers))
    return pts


@contextmanager
def split_graph(bridge):
    """Turn on the bridge's per-head results and per-reader input copies; restore its settings after."""
    cfg = bridge.cfg
    saved = {k: getattr(cfg, k) for k in ("use_attn_in", "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in")}
    try:
        bridge.set_use_attn_in(False)  # exclusive with split q/k/v inputs
        bridge.set_use_attn_result(True)
        bridge.set_use_split_qkv_input(True)
        bridge.set_use_hook_mlp_in(True)
        yield
    finally:
        bridge.set_use_hook_mlp_in(saved["use_hook_mlp_in"])
        bridge.set_use_split_qkv_input(saved["use_split_qkv_input"])
        bridge.set_use_attn_result(saved["use_attn_result"])
        bridge.set_use_attn_in(saved["use_attn_in"])


def record(g: Graph, into: Acts) -> list:
    """Hooks that write every writer's output into `into` [batch, pos, writer, d_model] as the forward
    reaches it (a reader later in the same forward can read it there)."""

    def hook_for(pt: Point):
        def hook(x, hook=None):
            into[:, :, pt.start: pt.start + pt.count] = pt.split(x)
            return x
        return hook

    return [(pt.name, hook_for(pt)) for pt in writer_points(g)]


def catch_gradients(g: Graph, diff: Acts, scores: Float[Tensor, "writer reader"], weight: float = 1.0) -> list:
    """Hooks that, in the backward pass, add diff[.., :upstream, :] . d metric / d(reader input) to each
    of the reader's edges in `scores` (times `weight`): the EAP score of every edge at once."""

    def hook_for(pt: Point):
        def on_grad(grad):
            grad = pt.split(grad).to(diff.dtype)
            s = einsum(diff[:, :, : pt.upstream], grad, "b p w d, b p r d -> w r")
            scores[: pt.upstream, pt.start: pt.start + pt.count] += weight * s.to(scores.dtype)

        def hook(x, hook=None):
            if not x.requires_grad:
                return x
            y = x.clone()  # what the reader reads: `x` itself may also flow on (hook_mlp_in's is the residual)
            y.register_hook(on_grad)
            return y
        return hook

    return [(pt.name, hook_for(pt)) for pt in reader_points(g)]


def patch(g: Graph, current: Acts, replacement: Acts | Float[Tensor, "writer d_model"],
          missing: Bool[Tensor, "writer reader"] | Float[Tensor, "batch writer reader"]) -> list:
    """Hooks that give every reader the replacement of each writer whose edge to it is `missing` (or a
    weighted share of it: `missing` may hold coefficients, per batch row): input += sum_w missing[w, r] *
    (replacement[w] - current[w]), with `current` recorded in the same forward by `record`. A reader with
    no missing edges is left untouched, so the full circuit reproduces the run exactly."""

    def hook_for(pt: Point):
        def hook(x, hook=None):
            m = missing[..., : pt.upstream, pt.start: pt.start + pt.count]
            if not m.any():
                return x
            rep = replacement[..., : pt.upstream, :]
            delta = (rep if rep.dim() == 4 else rep[None, None]) - current[:, :, : pt.upstream]
            m = m.to(delta.dtype)
            pattern = "b p w d, b w r -> b p r d" if m.dim() == 3 else "b p w d, w r -> b p r d"
            return pt.join(pt.split(x) + einsum(delta, m, pattern).to(x.dtype))
        return hook

    return [(pt.name, hook_for(pt)) for pt in reader_points(g)]


def embed_input(emb: Float[Tensor, "batch pos d_model"]) -> tuple[str, object]:
    """A hook that feeds `emb` as the input embedding (EAP-IG's interpolated inputs)."""
    return "hook_embed", lambda x, hook=None: emb.to(x.dtype)

