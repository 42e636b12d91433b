"""Forwards of the split graph: one function runs the model with hooks; the others are the runs every
method and the evaluator share (writers' outputs of a run, the clean run's answer distribution)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.edges.graph import Graph
from circuitlab.edges.hooks import Acts, record
from circuitlab.edges.metrics import answer_logprobs
from circuitlab.edges.batches import PairBatch


def run(model, ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
        hooks: list) -> Float[Tensor, "batch pos vocab"]:
    """The HF model's forward (whose modules the bridge wraps) with `hooks` on the bridge's hook points."""
    dev = model.device
    with model.bridge.hooks(fwd_hooks=hooks):
        out = model.hf_model(input_ids=ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)
    return out.logits


def new_acts(model, g: Graph, ids: Tensor) -> Acts:
    """An empty [batch, pos, writer, d_model] buffer in float32 (differences of bf16 runs stay accurate)."""
    return torch.zeros(*ids.shape, g.n_writers, model.d_model, dtype=torch.float32, device=model.device)


@torch.no_grad()
def writer_outputs(model, g: Graph, ids, attention_mask) -> Acts:
    """Every writer's output in a plain run of `ids`."""
    acts = new_acts(model, g, ids)
    run(model, ids, attention_mask, record(g, acts))
    return acts


@torch.no_grad()
def clean_answer_logprobs(model, batch: PairBatch) -> Float[Tensor, "n vocab"]:
    return answer_logprobs(run(model, batch.clean, batch.attention_mask, []), batch)


@contextmanager
def frozen(model):
    """No parameter needs a gradient (attribution differentiates activations only); restored after."""
    params = list(model.hf_model.parameters())
    was = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)
