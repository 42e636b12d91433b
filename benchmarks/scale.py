"""Locating at the users' scale: exact layer-conditioned locating on a model of a named shape.

Builds a randomly initialised Llama of the shape (no weights are downloaded), 64 samples whose
prompt lengths are those of the first 64 real hellaswag train prompts (random tokens, one answer
token; lengths in `benchmarks/data/hellaswag_train_lengths.json`), and times, in one run:

- the engine locating the whole circuit (n heads per layer, every layer);
- the plain algorithm (one full forward per candidate set, the paper's code) on the first
  `--plain-layers` layers only: its cost is the same in every layer, so its time for all L layers
  is that time x L / plain-layers (printed as such), and its heads on those layers must equal the
  engine's;
- a dense matmul in the model's dtype ([8192 x d_model] @ [d_model x d_ff]), for the engine's
  share of the machine's FLOP/s;
- for each N in `--processes`, the work of each of N processes, replayed alone one after another on
  this device (each process's share of every step, the trunk included): the slowest is what N
  devices would take, plus the all-gathers (measured once with 2 gloo processes on this machine's
  CPU and added per step). This is how N-process figures are obtained on one device. N = 1 is
  replayed too, and each speed-up is a replay over the 1-process replay of the same round
  (`--rounds R` alternates them R times and reports the median: this machine's speed drifts).

    python benchmarks/scale.py --shape cpu-small                       # this CPU, about a minute
    python benchmarks/scale.py --shape llama2-7b --device cuda --json benchmarks/results/gpu/NAME.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {  # layers, query heads, KV heads, d_model, d_ff (MLP), vocabulary
    "llama2-7b": (32, 32, 32, 4096, 11008, 32000),
    "llama3-8b": (32, 32, 8, 4096, 14336, 128256),
    "cpu-small": (8, 8, 2, 256, 688, 32000),
    "cpu-tiny": (3, 4, 2, 64, 128, 1000),
}
LENGTHS = Path(__file__).resolve().parent / "data" / "hellaswag_train_lengths.json"


def random_llama(shape: str, dtype: torch.dtype, device: str):
    """A LoadedModel over a Llama of `shape` with HF's random initialisation (seeded)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM

    from circuitlab.models import LoadedModel

    layers, heads, kv, d, ff, vocab = SHAPES[shape]
    config = LlamaConfig(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv, hidden_size=d,
                         intermediate_size=ff, vocab_size=vocab, max_position_embeddings=4096,
                         attn_implementation="eager")
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    tok = pad_only_tokenizer()  # only its pad id is read: the samples are token ids already
    bridge = TransformerBridge.boot_transformers("meta-llama/" + shape, hf_model=model, tokenizer=tok, dtype=dtype)
    return LoadedModel(shape, shape, None, bridge, tok)


def pad_only_tokenizer():
    """A two-token tokenizer built in memory: the bridge wants one, the samples need none (no files,
    so nothing beyond transformers and tokenizers has to be on a GPU machine)."""
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<pad>",
                                  bos_token="<pad>")
    folder = tempfile.mkdtemp(prefix="circuitlab-tokenizer-")  # the bridge reloads a tokenizer by its path
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def samples(n: int, vocab: int, seed: int = 0):
    from circuitlab.locate.encoding import Encoded

    spec = json.loads(LENGTHS.read_text())
    rng = random.Random(seed)
    lengths = (spec["prompt_tokens"] * (n // len(spec["prompt_tokens"]) + 1))[:n]
    return [Encoded(tuple(rng.randrange(3, vocab) for _ in range(k)), (rng.randrange(3, vocab),)) for k in lengths]


class Recording:
    """An evaluator that remembers every question it was asked, to replay them process by process."""

    def __init__(self, ev):
        self.ev, self.model, self.n_samples, self.calls = ev, ev.model, ev.n_samples, []

    def losses(self, *args):
        self.calls.append(("losses", args))
        return self.ev.losses(*args)

    def curve(self, *args):
        self.calls.append(("curve", args))
        return self.ev.curve(*args)

    def attribution(self, *args):
        self.calls.append(("attribution", args))
        return self.ev.attribution(*args)


def replay(engine, calls) -> float:
    """Seconds this process's share of every call takes (`engine.shard` says which share)."""
    start = time.perf_counter()
    for kind, args in calls:
        if kind == "losses":
            layer, base, heads = args
            engine._losses(layer, base, heads, engine._mine([(s, c) for c in range(len(heads))
                                                            for s in range(engine.n_samples)]))
        elif kind == "curve":
            engine._curve(*args, engine._mine(list(range(engine.n_samples))))
        else:
            engine._attribution(*args, engine._mine(list(range(engine.n_samples))))
    synchronize()
    return time.perf_counter() - start


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_flop_per_s(m: int, k: int, n: int, dtype: torch.dtype, device: str, seconds: float = 2.0) -> float:
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    torch.matmul(a, b)
    synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        reps += 1
    synchronize()
    return 2.0 * m * k * n * reps / (time.perf_counter() - start)


def gather_seconds(payload_floats: int, rounds: int = 20) -> float:
    """Seconds of one all_gather_object of `payload_floats` (row -> loss) between 2 gloo processes."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_gather_worker, args=(payload_floats, rounds, queue, port), nprocs=2, join=True)
    return queue.get()


def _gather_worker(rank: int, payload_floats: int, rounds: int, queue, port: int) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    obj = {(s, c): float(s + c) for s in range(payload_floats // 10) for c in range(10)}
    out: list = [None, None]
    dist.all_gather_object(out, obj)
    start = time.perf_counter()
    for _ in range(rounds):
        dist.all_gather_object(out, obj)
    if rank == 0:
        queue.put((time.perf_counter() - start) / rounds)
    dist.destroy_process_group()


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv=None) -> dict:
    from circuitlab.locate import Engine, LocateConfig, Memo, PlainEvaluator
    from circuitlab.core.processes import Shard
    from circuitlab.locate.strategies import layer_conditioned
    from circuitlab.core.provenance import package_versions

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=tuple(SHAPES), default="cpu-small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--n", type=int, help="heads per layer (default: 8 for 32 heads, else round(H/4))")
    p.add_argument("--plain-layers", type=int, default=2, help="layers the plain algorithm runs (then x L)")
    p.add_argument("--processes", default="1,2,8", help="N for the per-process replay")
    p.add_argument("--rounds", type=int, default=1, help="replays of every N, alternating (median speed-up)")
    p.add_argument("--max-batch-tokens", default="auto")
    p.add_argument("--attention", choices=("eager", "sdpa"), default="eager")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    tokens = args.max_batch_tokens if args.max_batch_tokens == "auto" else int(args.max_batch_tokens)

    model = random_llama(args.shape, dtype, args.device)
    L, H, _, d, ff, vocab = SHAPES[args.shape]
    data = samples(args.samples, vocab)
    plan = LocateConfig(n_per_layer=args.n).plan(model.dims)
    print(f"{args.shape}: {L} layers x {H} heads, d_model {d}, {dtype}, {args.device}; {len(data)} samples of "
          f"{min(len(e.ids) for e in data)}-{max(len(e.ids) for e in data)} tokens, n={plan.n}", flush=True)

    engine = Recording(Engine(model, data, tokens, shard=Shard(), attention=args.attention))
    synchronize()
    start = time.perf_counter()
    found = layer_conditioned.locate(engine, plan, Memo())
    synchronize()
    engine_s = time.perf_counter() - start
    flops = engine.ev.flops.total
    print(f"engine: {engine_s:.1f} s for the whole circuit ({L} layers), {flops / engine_s / 1e12:.2f} TFLOP/s, "
          f"{engine.ev.max_batch_tokens} tokens per forward", flush=True)

    k = min(args.plain_layers, L)
    first = LocateConfig(n_per_layer=plan.n, layers=(0, k - 1)).plan(model.dims)
    plain_ev = PlainEvaluator(model, data)
    synchronize()
    start = time.perf_counter()
    plain = layer_conditioned.locate(plain_ev, first, Memo())
    synchronize()
    plain_first_s = time.perf_counter() - start
    plain_s = plain_first_s * L / k
    same = all(plain.heads.at(la) == found.heads.at(la) for la in range(k))
    print(f"plain:  {plain_first_s:.1f} s for its first {k} layer(s) -> {plain_s:.1f} s for {L} (x {L}/{k}: every "
          f"layer costs it the same); engine/plain speed-up {plain_s / engine_s:.2f}x; heads of those layers "
          f"identical: {same}", flush=True)

    mm = matmul_flop_per_s(8192, d, ff, dtype, args.device)
    print(f"matmul [8192x{d}]@[{d}x{ff}] {dtype}: {mm / 1e12:.2f} TFLOP/s; engine at {flops / engine_s / mm:.0%} of it",
          flush=True)

    counts = sorted({int(x) for x in args.processes.split(",")} | {1})  # 1 replayed too: the base of speed-ups
    gather_s = gather_seconds((H + 1) * len(data)) if max(counts) > 1 else 0.0
    scaling = {n: {"rank_seconds": [], "wall_s": [], "speedup_over_1": []} for n in counts}
    for round_ in range(args.rounds):  # every N in each round, so that the machine's drift hits all alike
        for n_proc in counts:
            times = [replay(Engine(model, data, engine.ev.max_batch_tokens, shard=Shard(rank, n_proc),
                                   attention=args.attention), engine.calls) for rank in range(n_proc)]
            gathers = gather_s * len(engine.calls) if n_proc > 1 else 0.0
            row = scaling[n_proc]
            row["rank_seconds"].append(times)
            row["wall_s"].append(max(times) + gathers)
            row["speedup_over_1"].append(scaling[1]["wall_s"][-1] / row["wall_s"][-1])
            print(f"round {round_ + 1}, {n_proc} process(es): slowest share {max(times):.1f} s + all-gathers "
                  f"{gathers:.3f} s = {row['wall_s'][-1]:.1f} s; {row['speedup_over_1'][-1]:.2f}x one", flush=True)
    for row in scaling.values():
        row["speedup_median"] = statistics.median(row["speedup_over_1"])
    print(f"speed-up over 1 process (median of {args.rounds} round(s)): "
          + ", ".join(f"{n}: {r['speedup_median']:.2f}x" for n, r in scaling.items()), flush=True)
    peak = peak_memory_gib(args.device)
    print(f"peak memory: {peak:.1f} GiB ({'allocated on the GPU' if args.device.startswith('cuda') else 'process RSS'})")

    out = {
        "shape": args.shape, "layers": L, "heads_per_layer": H, "d_model": d, "dtype": str(dtype), "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "samples": len(data), "n": plan.n, "attention": args.attention,
        "engine_s": engine_s, "engine_flops": flops, "engine_flop_per_s": flops / engine_s,
        "max_batch_tokens": engine.ev.max_batch_tokens,
        "plain_layers_run": k, "plain_first_layers_s": plain_first_s, "plain_all_layers_s_extrapolated": plain_s,
        "speedup_over_plain": plain_s / engine_s, "heads_identical_on_plain_layers": same,
        "matmul_flop_per_s": mm, "engine_share_of_matmul": flops / engine_s / mm,
        "all_gather_s": gather_s, "steps": len(engine.calls), "processes": scaling, "peak_memory_gib": peak,
        "circuit": {str(k): v for k, v in found.heads.as_dict().items()},
        "how_n_processes_were_timed": "each process's share of every step replayed alone on this one device, one "
                                      "after another; the slowest plus the all-gathers (2 gloo processes on the CPU, "
                                      "per step) is what N devices would take",
        "command": "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "versions": package_versions(),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return out


if __name__ == "__main__":
    main()
