"""circuitlab's EAP-IG against the EAP-IG library (hannamw/EAP-IG) on the same pairs, the same graph, the same model.

The library runs on TransformerLens 2.x (`HookedTransformer`), which TransformerLens 4 removed, so it runs in its
own virtual environment, in a subprocess (`eap_library_runner.py`) that reads the job this script writes and
returns its scores and times; circuitlab runs in this process. Both take SmolLM2-135M as an HF directory
(`circuitlab export-model`), float32, on the CPU with the same number of threads, the first N add_sub test pairs
as one batch, EAP-IG over the input embedding with `--steps` points k/m, k = 0..m-1 (the library's), and the
answer's teacher-forced log-probability as the metric. The graph is the library's: one k and one v reader per
query head, which circuitlab builds with `--kv per-head` (123,211 edges). The library prepends BOS to every
prompt, so circuitlab's pairs carry it too, and the token ids of both sides are checked to be equal.

Timed: the attribution call alone on each side (model loaded), `--repeats` times, the two sides alternating.
The library was written for a GPU: the one tensor it puts on "cuda" (its score matrix) is put on the CPU here.

    python -m venv eapvenv && eapvenv/bin/pip install torch==2.13.0 'transformer-lens>=2.15,<3' matplotlib
    eapvenv/bin/pip install --no-deps -e EAP-IG          # its source: `fetch` github:hannamw/EAP-IG
    python benchmarks/eap_library.py --library-python eapvenv/bin/python --pairs 8 --steps 5 --repeats 3 \
        --json benchmarks/results/eap_library.json --figure benchmarks/results/eap_library.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from circuitlab.edges.batches import encode_pairs
from circuitlab.edges.config import METHODS, METRICS, EdgesConfig
from circuitlab.edges.graph import Graph
from circuitlab.edges.pairs import Pair
from circuitlab.models import load_model
from circuitlab.models.export import export_model
from circuitlab.models.ungroup import ungroup_kv_heads
from circuitlab.tasks.registry import pairs as task_pairs

RUNNER = Path(__file__).resolve().parent / "eap_library_runner.py"


def job_pairs(tokenizer, n: int, data_dir=None) -> tuple[list[Pair], list[dict]]:
    """The first n add_sub test pairs with BOS (as the library's `to_tokens` prepends it), and the library's
    view of them: full texts (prompt + answer, BOS left to the library), answer positions and token ids."""
    rows = [Pair(**p) for p in task_pairs("add_sub", "test", data_dir=data_dir)[:n]]
    bos = tokenizer.bos_token
    ours = [Pair(bos + p.clean, bos + p.corrupted, p.answer) for p in rows]
    b = encode_pairs(tokenizer, ours)
    theirs = []
    for i, p in enumerate(rows):
        pos = b.answer_mask[i].nonzero()[:, 0].tolist()
        theirs.append({"clean": p.clean + p.answer, "corrupted": p.corrupted + p.answer, "positions": pos,
                       "targets": b.targets[i, pos].tolist(), "ids": b.clean[i, : pos[-1] + 2].tolist()})
    return ours, theirs


def run_library(python: str, job: dict, work: Path) -> dict:
    (work / "job.json").write_text(json.dumps(job))
    subprocess.run([python, str(RUNNER), str(work / "job.json"), str(work / "out.json")], check=True)
    return json.loads((work / "out.json").read_text())


def compare(ours: dict[str, float], theirs: dict[str, float]) -> dict:
    names = sorted(theirs)
    a = torch.tensor([ours[n] for n in names], dtype=torch.float64)
    b = torch.tensor([theirs[n] for n in names], dtype=torch.float64)
    k = max(1, round(0.05 * len(names)))
    top = lambda s: set(s.abs().topk(k).indices.tolist())  # noqa: E731
    return {"edges": len(names), "same_edge_names": set(ours) == set(theirs),
            "max_abs_difference": (a - b).abs().max().item(), "max_abs_score": b.abs().max().item(),
            "relative_difference": ((a - b).abs().max() / b.abs().max()).item(),
            "pearson_r": torch.corrcoef(torch.stack([a, b]))[0, 1].item(),
            "top5pct_overlap": len(top(a) & top(b)) / k}


def figure(ours: dict[str, float], theirs: dict[str, float], result: dict, path: Path) -> None:
    """Every edge's score, circuitlab's against the library's, and the times of each repeat side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = sorted(theirs)
    a = result["agreement"]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], subplot_titles=[
        f"{a['edges']:,} edge scores (r = {a['pearson_r']:.7f}, max |difference| {a['max_abs_difference']:.1e})",
        f"EAP-IG attribution, {result['pairs']} pairs x {result['steps']} points ({result['threads']} threads)"])
    fig.add_trace(go.Scatter(x=[theirs[n] for n in names], y=[ours[n] for n in names], mode="markers",
                             marker={"size": 3, "color": "#1f77b4"}, showlegend=False), 1, 1)
    lim = a["max_abs_score"] * 1.05
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line={"dash": "dot", "color": "#999"},
                             showlegend=False), 1, 1)
    for side, color in (("circuitlab", "#1f77b4"), ("library", "#d62728")):
        times = result["seconds"][side]
        fig.add_trace(go.Bar(x=[f"run {i + 1}" for i in range(len(times))], y=times, name=side, marker_color=color),
                      1, 2)
    fig.update_xaxes(title_text="EAP-IG library (TransformerLens 2.18)", row=1, col=1)
    fig.update_yaxes(title_text="circuitlab --kv per-head (TransformerLens 4)", row=1, col=1)
    fig.update_yaxes(title_text="seconds", row=1, col=2)
    fig.update_layout(width=1400, height=600, template="plotly_white", title=(
        f"circuitlab vs hannamw/EAP-IG on {result['model']} / {result['task']}: {result['speedup_median']:.2f}x the "
        f"library's speed (median); scores within {a['relative_difference']:.1e} of the largest"))
    fig.write_image(str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--library-python", required=True, help="python of the EAP-IG library's virtual environment")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir")
    ap.add_argument("--json")
    ap.add_argument("--figure", help="PNG of the scores against each other and the times")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="eap-library-") as tmp:
        work = Path(tmp)
        model_dir = export_model("smollm2-135m", work / "smollm2-135m")
        m = load_model(str(model_dir), dtype="float32", before_bridge=ungroup_kv_heads)
        g = Graph.of(m)
        ours_pairs, theirs_pairs = job_pairs(m.tokenizer, args.pairs, args.data_dir)
        batch = encode_pairs(m.tokenizer, ours_pairs)
        cfg = EdgesConfig(method="eap-ig", steps=args.steps, ig_points="left", kv="per-head")
        job = {"model_dir": str(model_dir), "pairs": theirs_pairs, "steps": args.steps, "repeats": 1,
               "threads": args.threads}
        ours_s, theirs_s, lib = [], [], None
        for _ in range(args.repeats):  # alternating, so drifts in the machine's speed hit both sides
            start = time.perf_counter()
            scores = METHODS["eap-ig"].fn(m, batch, METRICS["logprob"], None, cfg.alphas()) / len(ours_pairs)
            ours_s.append(time.perf_counter() - start)
            lib = run_library(args.library_python, job, work)
            theirs_s.extend(lib["seconds"])
    assert lib["tokens"] == [p["ids"] for p in theirs_pairs], "the two sides tokenized the pairs differently"
    ours = {g.edge_name(w, r): scores[w, r].item() for w, r in g.edge_mask.nonzero().tolist()}
    result = {
        "model": "smollm2-135m", "task": "add_sub", "pairs": args.pairs, "steps": args.steps, "threads": args.threads,
        "graph": {"edges": g.n_edges, "kv": "per-head"}, "agreement": compare(ours, lib["scores"]),
        "seconds": {"circuitlab": ours_s, "library": theirs_s},
        "median_seconds": {"circuitlab": statistics.median(ours_s), "library": statistics.median(theirs_s)},
        "speedup_median": statistics.median(theirs_s) / statistics.median(ours_s),
        "library_versions": lib["versions"], "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.figure:
        figure(ours, lib["scores"], result, Path(args.figure))


if __name__ == "__main__":
    main()
