"""Matmul FLOPs of what the engine runs (padding included), for the benchmark's FLOP/s figure."""

from __future__ import annotations


class FlopCount:
    """A running total; each method adds one kind of work and returns what it added."""

    def __init__(self, model):
        block = model.hf_model.model.layers[0]
        self.dims = model.dims
        self.layer_params = sum(p.numel() for p in block.parameters() if p.dim() == 2)
        self.kv_params = 2 * self.dims.d_model * self.dims.n_kv_heads * self.dims.d_head
        self.vocab = model.hf_model.lm_head.weight.shape[0]
        self.total = 0.0

    def _add(self, flops: float) -> float:
        self.total += flops
        return flops

    def _attention(self, queries: int, width: int) -> float:
        """Scores and weighted sum: 2 x 2 x queries x keys x d_head per head."""
        return 4.0 * queries * self.dims.n_heads * width * self.dims.d_head

    def blocks(self, lines: int, width: int, n_blocks: int) -> float:
        tokens = lines * width
        return self._add(n_blocks * (2.0 * self.layer_params * tokens + self._attention(tokens, width)))

    def last_block_at_targets(self, lines: int, width: int, n_targets: int) -> float:
        """Keys and values at every position; queries, output and MLP at the targets only."""
        return self._add(2.0 * self.kv_params * lines * width + 2.0 * self.layer_params * n_targets
                         + self._attention(n_targets, width))

    def unembed(self, n_targets: int) -> float:
        return self._add(2.0 * n_targets * self.vocab * self.dims.d_model)
