"""The EAP-IG library's side of `eap_library.py`: run in the library's own virtual environment (TransformerLens 2.x),
never imported by circuitlab. Reads the job JSON `eap_library.py` wrote, runs `eap.attribute.attribute(...,
method="EAP-IG-inputs")` as a user of the library does, and writes every edge's score and the times.

    LIBRARY_PYTHON benchmarks/eap_library_runner.py JOB.json OUT.json
"""

import json
import sys
import time
from importlib import metadata

import torch
from eap import attribute as eap_attribute
from eap.attribute import attribute
from eap.graph import Graph
from eap.utils import tokenize_plus
from transformer_lens import HookedTransformer
from transformer_lens.loading_from_pretrained import get_pretrained_model_config
from transformer_lens.pretrained.weight_conversions import convert_llama_weights
from transformers import AutoModelForCausalLM, AutoTokenizer


class _CpuTorch:
    """`torch` for the library's module, with its one hard-coded `device='cuda'` (the score matrix) on the CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def zeros(*args, device=None, **kwargs):
        return torch.zeros(*args, device="cpu" if device == "cuda" else device, **kwargs)


def load(directory: str) -> HookedTransformer:
    """The HF directory as a HookedTransformer with its weights as they are (no folding or centring), built
    from the local config (TransformerLens 2's `from_pretrained` takes only hub names; its config of a local
    Llama ignores `rope_theta`, so SmolLM2's 100,000 is set here, or every score would differ)."""
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    cfg = get_pretrained_model_config(directory, device="cpu", dtype=torch.float32)
    cfg.rotary_base = hf.config.rope_theta  # TransformerLens 2.18 leaves a local Llama's RoPE base at 10,000
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(directory))
    model.load_and_process_state_dict(convert_llama_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False,
                                      refactor_factored_attn_matrices=False)
    model.cfg.ungroup_grouped_query_attention = True
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model


def main(job_path: str, out_path: str) -> None:
    job = json.loads(open(job_path).read())
    torch.set_num_threads(job["threads"])
    eap_attribute.torch = _CpuTorch()
    model = load(job["model_dir"])
    rows = job["pairs"]
    tokens = tokenize_plus(model, [r["clean"] for r in rows])[0].tolist()
    labels = [(r["positions"], r["targets"]) for r in rows]

    def metric(logits, clean_logits, input_lengths, label):
        """Minus the answer's teacher-forced log-probability, summed over the batch (the library divides the
        scores by the number of pairs)."""
        lp = torch.log_softmax(logits, dim=-1)
        return -sum(lp[b, pos, tgt].sum() for b, (pos, tgt) in enumerate(label))

    data = [([r["clean"] for r in rows], [r["corrupted"] for r in rows], labels)]
    graph = Graph.from_model(model)
    seconds = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        attribute(model, graph, data, metric, method="EAP-IG-inputs", ig_steps=job["steps"], quiet=True)
        seconds.append(time.perf_counter() - start)
    scores = {name: float(edge.score) for name, edge in graph.edges.items()}
    versions = {m: metadata.version(m) for m in ("torch", "transformer-lens", "transformers", "eap")}
    with open(out_path, "w") as f:
        json.dump({"tokens": [t[: len(r["ids"])] for t, r in zip(tokens, rows)], "seconds": seconds,
                   "scores": scores, "versions": versions}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
