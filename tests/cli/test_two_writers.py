"""Two real `circuitlab` processes on one output, per job kind: the first is paused by the fault hook
(`$CIRCUITLAB_FAULT=pause:1`: at its first write boundary, holding the output's lock), the second says in one line
that it waits; then the first goes on. Same settings: the second reuses the first's result (the work is done
once); other settings: refused in one line, never mixed. No sleeps: each side waits for the other's line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.core.io import FAULT_ENV

ROOT = Path(__file__).resolve().parents[2]


def start(argv, pause=False):
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update({"HF_HUB_OFFLINE": "1", **({FAULT_ENV: "pause:1"} if pause else {})})
    return subprocess.Popen([sys.executable, "-m", "circuitlab", *map(str, argv)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p) -> tuple[int, str, str]:
    """Let `p` go on (its stdin closed: a paused process resumes) and wait for it."""
    out, err = p.communicate("")
    return p.returncode, out, err


def two_writers(first_argv, second_argv, out) -> tuple[int, str, str]:
    first = start(first_argv, pause=True)
    lines = [first.stderr.readline()]
    while lines[-1] and not lines[-1].startswith("paused at "):  # log lines before the first write
        lines.append(first.stderr.readline())
    assert lines[-1].startswith("paused at "), (lines, finish(first))
    second = start(second_argv)
    assert second.stderr.readline() == f"circuitlab: {out} is being written by another process; waiting for it\n"
    code, _, err = finish(first)
    assert code == 0, err
    return finish(second)


def test_locate(tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"prompt": "The sky is", "target": " blue"}\n{"prompt": "Hot and", "target": " cold"}\n')
    out = tmp_path / "c.json"
    argv = ["locate", "--model", "tiny-llama", "--samples-file", samples, "--heads-per-layer", "1", "--no-progress",
            "--out", out]
    code, stdout, err = two_writers(argv, argv, out)
    assert code == 0 and "reused" in stdout + err
    made = json.loads(out.read_text())
    other = tmp_path / "d.json"
    code, _, err = two_writers(argv[:-1] + [other], argv[:-2] + ["--heads-per-layer", "2", "--out", other], other)
    assert code == 2 and err.count("\n") == 1 and "made with other settings" in err
    assert json.loads(out.read_text()) == made


def test_finetune_two_seeds_into_one_run_directory(tmp_path):
    """The issue's case: two seeds into one --out both reported success and left a mixed directory."""
    run = tmp_path / "run"
    argv = ["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "lora", "--rank", "2",
            "--max-train", "4", "--batch-size", "2", "--epochs", "1", "--limit", "2", "--no-progress",
            "--out", run]
    code, _, err = two_writers(argv + ["--seed", "1"], argv + ["--seed", "2"], run / "result.json")
    assert code == 2 and err.count("\n") == 1 and "made with other settings (differs in: seed)" in err
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert json.loads((run / "result.json").read_text())["config"]["seed"] == 1


def test_export_model(tmp_path):
    out = tmp_path / "m"
    code, _, err = two_writers(["export-model", "tiny-llama", "--out", out],
                               ["export-model", "tiny-llama", "--out", out], out)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_edges(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"clean": "12 + 5 =", "corrupted": "12 - 5 =", "answer": " 17"}\n'
                     '{"clean": "31 + 40 =", "corrupted": "31 - 40 =", "answer": " 71"}\n')
    out = tmp_path / "e.json"
    argv = ["edges", "--model", "tiny-llama", "--pairs", pairs, "--method", "eap", "--batch-size", "1", "--top-n",
            "5", "--no-progress", "--out", out]
    code, stdout, err = two_writers(argv, argv, out)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "e.safetensors", "pairs.jsonl"]


def test_merge(tmp_path):
    from peft import get_peft_model

    from circuitlab.headmap import HeadMapConfig, base_info, register
    from circuitlab.models import tiny_model

    plain, _ = tiny_model("tiny-llama")
    register()
    config = HeadMapConfig(variant="mha", heads={0: [1]}, r=2, base_model=base_info(plain, "tiny-llama"))
    get_peft_model(tiny_model("tiny-llama")[0], config).save_pretrained(tmp_path / "adapter")
    out = tmp_path / "merged"
    code, _, err = two_writers(["merge", tmp_path / "adapter", "--out", out], ["merge", tmp_path / "adapter",
                                                                               "--out", out], out)
    assert code == 2 and err.count("\n") == 1 and "already exists and is not empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]


def test_eval(tmp_path, data_dir):
    out = tmp_path / "r.json"
    argv = ["eval", "--model", "tiny-llama", "--task", "capitals", "--limit", "2", "--data-dir", data_dir,
            "--out", out]
    code, stdout, err = two_writers(argv, argv, out)
    assert code == 0 and "evaluated already with these settings, reused" in err, err
    other = tmp_path / "s.json"
    code, _, err = two_writers(argv[:-1] + [other], argv[:-2] + ["--limit", "3", "--out", other], other)
    assert code == 2 and err.count("\n") == 1 and "made with other settings (differs in: docs)" in err, err
    assert json.loads(other.read_text())["n_docs"] == 2  # the first's, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "s.json"]


def tiny_run_with_checkpoints(tmp_path) -> Path:
    from circuitlab.finetune import RunOptions, finetune
    from circuitlab.models.plain import load_plain
    from tests.finetune.common import cfg

    run = tmp_path / "run"
    finetune(load_plain("tiny-llama"), cfg(method="lora", max_train=2, batch_size=2, epochs=1, eval_limit=2),
             run, progress=False, options=RunOptions(save_every=1))
    return run


def test_track(tmp_path):
    """The whole --out directory is locked (track.json and the figures too, not only each step's files)."""
    run = tiny_run_with_checkpoints(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"clean": "12 + 5 =", "corrupted": "12 - 5 =", "answer": " 17"}\n'
                     '{"clean": "31 + 40 =", "corrupted": "31 - 40 =", "answer": " 71"}\n')
    out = tmp_path / "t"
    argv = ["track", run, "--pairs", pairs, "--method", "eap", "--batch-size", "2", "--top-n", "12", "--no-png",
            "--no-progress", "--out", out]
    code, stdout, err = two_writers(argv, argv, out)
    assert code == 0 and "step-0: reused step-0.json" in err, err
    made = {p.name: p.read_bytes() for p in out.glob("step-*")}
    code, _, err = two_writers(argv, argv[:-2] + ["--top-n", "5", "--out", out], out)
    assert code == 2 and err.count("\n") == 1 and "made with other settings (differs in: settings)" in err, err
    assert {p.name: p.read_bytes() for p in out.glob("step-*")} == made
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".lock", ".tmp", ".partial"))]


def test_reproduce_and_held_out(tmp_path, data_dir):
    out = tmp_path / "r"
    argv = ["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--data-dir", data_dir, "--samples", "3",
            "--heads-per-layer", "1", "--max-docs", "16", "--all-docs", "4", "--seeds", "0,1", "--no-png",
            "--out", out]
    code, stdout, err = two_writers(argv, argv, out)
    assert code == 0 and "capitals: done already" in stdout, (stdout, err)
    circuit = out / "circuits" / "capitals.json"
    made = circuit.read_bytes()
    code, _, err = two_writers(argv, argv[:-2] + ["--samples", "4", "--out", out], out)
    assert code == 2 and err.count("\n") == 1 and "made with other settings (differs in: samples)" in err, err
    assert circuit.read_bytes() == made
    held = tmp_path / "h"
    argv = ["held-out", circuit, "--data-dir", data_dir, "--docs", "2", "--out", held]
    code, _, err = two_writers(argv, argv, held / "capitals.json")
    assert code == 0 and "capitals: reused" in err, err
    other = tmp_path / "h2"
    code, _, err = two_writers(argv[:-1] + [other], argv[:-4] + ["--docs", "3", "--out", other],
                               other / "capitals.json")
    assert code == 2 and err.count("\n") == 1 and "made with other settings (differs in: docs)" in err, err
    assert len(json.loads((other / "capitals.json").read_text())["doc_indices"]) == 2  # the first's, whole
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".lock", ".tmp", ".partial"))]
