"""Several processes (gloo, on this CPU) give the one-process circuit, and a killed run resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from circuitlab.circuits.circuit import Circuit
from circuitlab.locate import LocateConfig, locate
from circuitlab.core.processes import Shard, share
from tests.helpers import SAMPLES, close, free_port, partial_steps

CONFIGS = {
    "layer-conditioned": LocateConfig(n_per_layer=2, max_batch_tokens=40),
    "greedy": LocateConfig("greedy", n_per_layer=2, max_batch_tokens=40),
    "random": LocateConfig("random", n_per_layer=2, seeds=(0, 1), max_batch_tokens=40),
    "prescreened": LocateConfig(n_per_layer=2, prescreen=3, max_batch_tokens=40),
}
REPO = Path(__file__).resolve().parents[2]


def worker(rank: int, world: int, port: int, out: str, names: list[str], fail_at: str | None) -> None:
    """One process of a `world`-process run: locate each config to out/NAME.json."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from circuitlab.locate import locate_to
    from circuitlab.core.processes import start
    from circuitlab.models import load_model

    start("cpu")
    model = load_model("tiny-llama-gqa")

    def on_step(step):
        if rank == world - 1 and str(step) == fail_at:
            os._exit(3)  # killed mid-run: no clean-up, like a SIGKILL

    for name in names:
        locate_to(Path(out) / f"{name}.json", model, SAMPLES, CONFIGS[name], progress=False, on_step=on_step)


def spawn(world: int, out: Path, names: list[str], fail_at: str | None = None) -> None:
    mp.spawn(worker, args=(world, free_port(), str(out), names, fail_at), nprocs=world, join=True)


def same(a: Circuit, b: Circuit) -> None:
    assert a.heads == b.heads and a.baseline_loss == pytest.approx(b.baseline_loss, rel=1e-5)
    assert close(a.loss_curve, b.loss_curve)
    for name, table in a.scores.items():
        assert all(close(r1, r2) for r1, r2 in zip(table, b.scores[name])), name
    assert [(s.heads, s.seed) for s in a.selections] == [(s.heads, s.seed) for s in b.selections]
    assert all(close(s.loss_curve, t.loss_curve) for s, t in zip(a.selections, b.selections))


@pytest.mark.usefixtures("one_thread")
def test_two_processes_give_the_one_process_circuits(tiny_gqa, tmp_path):
    spawn(2, tmp_path, list(CONFIGS))
    for name, config in CONFIGS.items():
        two = Circuit.load(tmp_path / f"{name}.json")
        assert two.run.processes == 2
        same(two, locate(tiny_gqa, SAMPLES, config, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.json" for n in CONFIGS)  # no partial state left


@pytest.mark.usefixtures("one_thread")
def test_a_run_whose_process_is_killed_mid_layer_resumes_with_the_same_result(tiny_gqa, tmp_path):
    with pytest.raises(Exception):
        spawn(2, tmp_path, ["layer-conditioned"], fail_at="conditioned/1")
    done = partial_steps(tmp_path / "layer-conditioned.json")
    assert {"conditioned/0", "conditioned/1"} <= set(done) and not (tmp_path / "layer-conditioned.json").exists()
    spawn(2, tmp_path, ["layer-conditioned"])
    resumed = Circuit.load(tmp_path / "layer-conditioned.json")
    assert resumed.run.resumed_steps >= 2
    same(resumed, locate(tiny_gqa, SAMPLES, CONFIGS["layer-conditioned"], progress=False))


def test_rows_are_shared_evenly_and_the_same_way_on_every_rank():
    lengths = [5, 17, 3, 40, 11, 8, 26, 2, 9]
    rows = [(s, c) for c in range(4) for s in range(len(lengths))]
    parts = [share(rows, lambda r: lengths[r[0]], Shard(rank, 3)) for rank in range(3)]
    assert sorted(r for part in parts for r in part) == sorted(rows)  # each row once
    loads = [sum(lengths[s] for s, _ in part) for part in parts]
    assert max(loads) - min(loads) <= max(lengths)  # within one row of each other
    assert parts[1] == share(rows, lambda r: lengths[r[0]], Shard(1, 3))  # deterministic


def test_torchrun_runs_the_command_as_several_processes(tmp_path):
    """The real launcher: the first process selects the samples and writes the circuit."""
    out = tmp_path / "c.json"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(free_port()), "-m", "circuitlab", "locate", "--model", "tiny-llama", "--task", "capitals",
            "--samples", "3", "--max-docs", "24", "--no-progress", "--processes", "2", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote") == 1  # one process speaks
    c = Circuit.load(out)
    assert c.run.processes == 2 and len(c.samples) == 3
