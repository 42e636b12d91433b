"""Every bad input, on every command: exit code 2, one line on stderr, no traceback, nothing written,
and (unless the model's weights are needed to tell) decided before any model loads."""

import json
import sys

import pytest

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from peft import get_peft_model

from circuitlab.headmap import HeadMapConfig, base_info, register
from circuitlab.models import tiny_model
from tests.helpers import one_line_error

AFTER_LOAD = "after-load"  # cases only the loaded weights can decide


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny, tiny_gqa):
    """Good and bad input files, in a directory of their own."""
    d = tmp_path_factory.mktemp("inputs")
    rows = [{"prompt": "The capital of Peru is", "target": " Lima"}, {"prompt": "Hot and", "target": " cold"}]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "malformed.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n")
    (d / "truncated.jsonl").write_text(json.dumps(rows[0]) + '\n{"prompt": "a", "tar')
    (d / "schema.jsonl").write_text('{"prompt": "a", "answer": " b"}\n')
    (d / "task.jsonl").write_text('{"prompt": "a", "choices": [" b"], "gold": 3}\n')
    circuit = Circuit(ModelInfo.of(tiny), TaskInfo("capitals", "train"), [], "layer-conditioned", 1,
                      {layer: [0] for layer in range(4)})
    circuit.save(d / "tiny.json")
    Circuit(ModelInfo.of(tiny_gqa), TaskInfo("capitals", "train"), [], "random", 1, {0: [7]}).save(d / "gqa.json")
    other = circuit.to_dict()
    other["model"]["fingerprint"] = "0123456789abcdef"  # same dimensions, other weights
    (d / "other_weights.json").write_text(json.dumps(other))
    (d / "schema3.json").write_text(json.dumps({**circuit.to_dict(), "schema_version": 3}))
    (d / "out_of_range.json").write_text(json.dumps({**circuit.to_dict(), "heads": {"1": [4]}}))
    (d / "truncated.json").write_text(json.dumps(circuit.to_dict())[:100])
    (d / "malformed.json").write_text("{not json")
    (d / "array.json").write_text("[1, 2]")
    (d / "result.json").write_text(json.dumps({"method": "lora", "config": {}}))
    (d / "a_file").write_text("")
    (d / "pairs_unequal.jsonl").write_text('{"clean": "12 + 5 =", "corrupted": "123 - 5 =", "answer": " 17"}\n')
    (d / "pairs_no_answer.jsonl").write_text('{"clean": "12 + 5 =", "corrupted": "12 - 5 ="}\n')
    plain, _ = tiny_model("tiny-llama")
    register()
    for name, variant in (("adapter_hs", "hs"), ("adapter_v2", "mha")):
        config = HeadMapConfig(variant=variant, heads={0: [1]}, r=2, base_model=base_info(plain, "tiny-llama"))
        get_peft_model(tiny_model("tiny-llama")[0], config).save_pretrained(d / name)
    (d / "adapter_v2" / "adapter_config.json").unlink()  # circuitlab's earlier format, of a newer version
    (d / "adapter_v2" / "headmap_config.json").write_text(json.dumps({"format": "circuitlab-headmap",
                                                                       "format_version": 2}))
    gqa_plain = tiny_model("tiny-llama-gqa")[0]
    config = HeadMapConfig(heads={0: [1]}, r=2, base_model=base_info(gqa_plain, "tiny-llama-gqa"))
    get_peft_model(gqa_plain, config).save_pretrained(d / "adapter_gqa")  # trained on another base model
    (d / "adapter_unknown").mkdir()
    (d / "adapter_unknown" / "adapter_config.json").write_text(json.dumps({"peft_type": "FROBNICATE", "r": 2}))
    (d / "adapter_bad").mkdir()
    (d / "adapter_bad" / "headmap_config.json").write_text('{"format": "circuitlab-headmap", "variant"')
    return d


LOCATE = ["locate", "--model", "tiny-llama", "--task", "capitals", "--samples-file", "{in}/samples.jsonl",
          "--out", "{out}/c.json", "--no-progress"]
SELECT = ["locate", "--model", "tiny-llama", "--task", "capitals", "--max-docs", "5", "--out", "{out}/c.json",
          "--no-progress"]
FINETUNE = ["finetune", "--model", "tiny-llama", "--task", "capitals", "--out", "{out}/run"]
REPRODUCE = ["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--out", "{out}/repro"]

CASES = [
    # locate: impossible option values
    (LOCATE + ["--max-batch-tokens", "0"], "--max-batch-tokens must be a positive integer"),
    (LOCATE + ["--model", "tiny-llama-gqa", "--prescreen", "1"], "--prescreen 1 must be between n=2"),
    (LOCATE + ["--heads-per-layer", "0"], "--heads-per-layer must be a positive integer"),
    (LOCATE + ["--heads-per-layer", "9"], "--heads-per-layer 9 out of range"),
    (LOCATE + ["--layers", "2-9"], "--layers 2-9 out of range"),
    (LOCATE + ["--layers", "x"], "--layers: must be A-B"),
    (LOCATE + ["--layers", "3-1"], "--layers must be A-B with 0 <= A <= B"),
    (LOCATE + ["--samples", "0"], "--samples must be a positive integer"),
    (LOCATE + ["--seeds", "1,x"], "--seeds: must be comma-separated integers"),
    (LOCATE + ["--strategy", "random", "--seed", "3", "--seeds", "0,1"], "--seed and --seeds both give the seeds"),
    (LOCATE + ["--prescreen", "3", "--plain"], "--prescreen needs the engine"),
    # locate: settings the strategy or the ablation would not read
    (LOCATE + ["--seed", "3"], "--seed draw the heads of strategies random and redundant; layer-conditioned draws"),
    (LOCATE + ["--strategy", "greedy", "--seeds", "0,1"], "--seeds draw the heads of strategies random and redundant"),
    (LOCATE + ["--strategy", "random", "--prescreen", "3"], "--prescreen ranks the heads a strategy scores; random"),
    (LOCATE + ["--ablation-docs", "8"], "--ablation-docs is read only by --ablation mean, not zero"),
    (LOCATE + ["--strategy", "random", "--circuit", "{in}/tiny.json"], "--circuit is read only by strategy redundant"),
    # locate: unknown names, devices, dtypes, models
    (LOCATE + ["--strategy", "best"], "invalid choice: 'best'"),
    (LOCATE + ["--device", "cuda"], "--device cuda: this machine has no cuda device"),
    (LOCATE + ["--device", "cuda:7"], "--device cuda:7: this machine has no cuda device"),
    (LOCATE + ["--device", "mps"], "--device mps: this machine has no mps device"),
    (LOCATE + ["--device", "gpu"], "--device is not a torch device"),
    (LOCATE + ["--dtype", "fp8"], "invalid choice: 'fp8'"),
    (LOCATE + ["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (LOCATE + ["--processes", "2"], "--processes 2: it was not started by torchrun"),
    (LOCATE + ["--device-map", '{{"model.layers.0": "cuda:3"}}'], "--device-map names 'cuda:3'"),
    (LOCATE + ["--device-map", '{{"model.layers.0": 1}}'], "--device-map names 1"),
    (LOCATE + ["--device-map", "nowhere"], "--device-map must be one of auto, balanced"),
    (LOCATE + ["--device-map", "auto", "--max-memory", "0=lots"], "--max-memory must be DEVICE=SIZE"),
    (LOCATE + ["--device-map", "auto", "--max-memory", "5=10GiB"], "--max-memory names 5"),
    (LOCATE + ["--max-memory", "cpu=1GiB"], "--max-memory bounds a device map"),
    (LOCATE + ["--device", "cuda", "--device-map", "auto"], "--device and --device-map both place the model"),
    (LOCATE + ["--model", "llama2-7b"], "not in the local cache"),
    (SELECT[:4] + ["nope", "--out", "{out}/c.json"], "unknown task 'nope'"),
    (["locate", "--model", "tiny-llama", "--out", "{out}/c.json"], "--task is needed"),
    # locate: files
    (LOCATE[:-5] + ["--samples-file", "{in}/missing.jsonl", "--out", "{out}/c.json"], "samples file not found"),
    (LOCATE[:-5] + ["--samples-file", "{in}/malformed.jsonl", "--out", "{out}/c.json"], "line 2: malformed JSON"),
    (LOCATE[:-5] + ["--samples-file", "{in}/truncated.jsonl", "--out", "{out}/c.json"], "line 2: malformed JSON"),
    (LOCATE[:-5] + ["--samples-file", "{in}/schema.jsonl", "--out", "{out}/c.json"], 'expected {"prompt": str'),
    (LOCATE + ["--strategy", "redundant"], "--circuit is needed by strategy redundant"),
    (LOCATE + ["--strategy", "redundant", "--circuit", "{in}/gqa.json"], "circuit was located on tiny-llama-gqa"),
    (LOCATE + ["--strategy", "redundant", "--circuit", "{in}/malformed.json"], "malformed circuit file"),
    (LOCATE + ["--strategy", "redundant", "--circuit", "{in}/truncated.json"], "malformed circuit file"),
    (LOCATE + ["--strategy", "redundant", "--circuit", "{in}/schema3.json"], "schema version 3, newer"),
    (LOCATE + ["--strategy", "redundant", "--circuit", "{in}/out_of_range.json"], "head out of range"),
    (LOCATE + ["--strategy", "redundant", "--circuit", "{in}/other_weights.json"], "fingerprint", AFTER_LOAD),
    (LOCATE[:-3] + ["--out", "{in}/a_file/c.json"], "a_file is a file, not a directory"),
    (LOCATE[:-3] + ["--out", "/proc/circuitlab-test/c.json"], "cannot be written"),
    (LOCATE + ["--strategy", "redundant", "--circuit", "{in}/tiny.json", "--heads-per-layer", "4"],
     "--heads-per-layer 4 out of range: layer 0 has only 3 heads outside the circuit"),
    (LOCATE + ["--samples", "5"], "--samples-file"),
    (LOCATE + ["--rows", "0,1"], "--rows and --data-dir select samples from a task's docs"),
    (SELECT[:5] + ["--out", "{out}/c.json", "--rows", "100000"], "--rows names row 100000, but the train split has"),
    (SELECT + ["--split", "nosuch"], "has no 'nosuch' split"),
    (SELECT[:4] + ["sst2", "--data-dir", "{out}/missing"], "data directory"),
    (SELECT[:4] + ["boolq", "--split", "test", "--data-dir", "{data}"], "has no 'test' split"),
    # eval
    (["eval", "--model", "tiny-llama", "--task", "nope"], "unknown task"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--limit", "0"], "--limit must be a positive integer"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--batch-size", "0"], "--batch-size must be a positive"),
    (["eval", "--model", "tiny-llama", "--task", "{in}/task.jsonl"], "'gold' must be an integer in 0..0"),
    (["eval", "--model", "tiny-llama", "--task", "{in}/missing.jsonl"], "does not exist"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--out", "{in}/a_file/r.json"], "is a file"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--device", "cuda:7"], "no cuda device"),
    # plot and compare
    (["plot", "{in}/missing.json", "--out", "{out}/figs"], "circuit file not found"),
    (["plot", "{in}/array.json", "--out", "{out}/figs"], "expected a JSON object"),
    (["plot", "{in}/schema3.json", "--out", "{out}/figs"], "newer than this circuitlab"),
    (["plot", "{in}/tiny.json", "{in}/gqa.json", "--out", "{out}/figs"], "different models"),
    (["plot", "{in}/tiny.json", "--out", "{in}/a_file/figs"], "is a file, not a directory"),
    (["compare", "{in}/tiny.json", "--out", "{out}/cmp"], "at least two circuit files"),
    (["compare", "{in}/tiny.json", "{in}/gqa.json", "--out", "{out}/cmp"], "cannot compare circuits of different"),
    (["compare", "{in}/tiny.json", "{in}/other_weights.json", "--out", "{out}/cmp"], "fingerprint"),
    # stats
    (["stats", "--a", "{in}/missing", "--b", "{in}/missing"], "not found"),
    (["study", "plan", "{in}/missing.toml"], "study spec not found"),
    (["study", "run", "{in}/tiny.json"], "malformed study spec"),
    (["study", "analyze", "{in}/missing.toml", "--engine", "slurm"], "invalid choice: 'slurm'"),
    (["study", "status", "{in}/missing.toml", "--threads", "2"], "study status: --threads is an option of study run"),
    (["study", "plan", "{in}/missing.toml", "--no-png"], "study plan: --no-png is an option of study analyze"),
    (["study", "run", "{in}/missing.toml", "--gpus-per-job", "1"], "--gpus-per-job is an option of the Ray engine"),
    (["stats", "--a", "{in}/tiny.json", "--b", "{in}/tiny.json"], "not a circuitlab finetune result.json"),
    (["stats", "--a", "{in}/tiny.json", "--b", "{in}/tiny.json", "--bootstrap", "5"], "--bootstrap must be at least"),
    (["stats", "--a", "{in}/tiny.json", "--b", "{in}/tiny.json", "--measure", "f1"], "invalid choice: 'f1'"),
    # reproduce
    (REPRODUCE[:4] + ["nope", "--out", "{out}/repro"], "unknown task 'nope'"),
    (REPRODUCE + ["--samples", "0"], "--samples must be a positive integer"),
    (REPRODUCE + ["--seeds", "a,b"], "--seeds: must be comma-separated integers"),
    (REPRODUCE + ["--all-docs", "0"], "--all-docs must be a positive integer"),
    (REPRODUCE + ["--heads-per-layer", "5"], "--heads-per-layer 5 out of range"),
    (REPRODUCE[:-1] + ["{in}/a_file/repro"], "is a file, not a directory"),
    (REPRODUCE[:4] + ["sst2", "--data-dir", "{out}/missing", "--out", "{out}/repro"], "data directory"),
    # finetune
    (FINETUNE + ["--method", "adapterx"], "--method: invalid choice: 'adapterx'"),
    (FINETUNE, "--method is required"),
    (FINETUNE + ["--method", "headmap-mha", "--circuit", "{in}/missing.json"], "circuit file not found"),
    (FINETUNE + ["--method", "headmap-mha", "--circuit", "{in}/gqa.json"], "circuit was located on tiny-llama-gqa"),
    (FINETUNE + ["--method", "headmap-mha", "--circuit", "{in}/tiny.json", "--heads-per-layer", "3"],
     "differs from the circuit's 1"),
    (FINETUNE + ["--method", "headmap-mha", "--heads", "anti", "--circuit", "{in}/tiny.json"],
     "records no score table"),
    (FINETUNE + ["--method", "lora", "--rank", "0"], "--rank must be a positive integer"),
    (FINETUNE + ["--method", "lora", "--epochs", "0"], "--epochs must be a positive integer"),
    (FINETUNE + ["--method", "lora", "--batch-size", "4", "--micro-batch-size", "3"], "not a multiple"),
    (FINETUNE + ["--method", "lora", "--heads", "weird"], "--heads: invalid choice"),
    (FINETUNE + ["--method", "headmap-mha", "--heads", "random", "--heads-per-layer", "9"],
     "--heads-per-layer 9 needs 9 heads per layer; the model has 4"),
    (FINETUNE + ["--method", "headmap-mha", "--heads", "redundant", "--heads-per-layer", "3"],
     "--heads-per-layer 3 needs 2 x 3"),
    (FINETUNE + ["--method", "headmap-hs", "--heads-per-layer", "5"], "--heads-per-layer 5 needs 5 heads"),
    (FINETUNE + ["--method", "lora", "--train-split", "test"], "has no 'test' split"),
    (FINETUNE + ["--method", "lora", "--heads-per-layer", "2"], "--heads-per-layer chooses HeadMap's heads; --method "
                                                                "lora maps none"),
    (FINETUNE + ["--method", "base", "--circuit", "{in}/tiny.json"], "--circuit chooses HeadMap's heads"),
    (FINETUNE + ["--method", "dora", "--lr-peft", "1e-4"], "--lr-peft is the LoRA/DoRA rate of a HeadMap + LoRA/DoRA"),
    (FINETUNE + ["--method", "lora", "--device", "cuda"], "--device cuda: this machine has no cuda device"),
    # table, export, merge
    (["table", "{in}/missing.json"], "run result not found"),
    (["table", "{in}/malformed.json"], "malformed run result"),
    (["table", "{in}/result.json"], "is not a circuitlab finetune result.json"),
    (["table", "{in}/tiny.json"], "is not a circuitlab finetune result.json"),
    (["export", "{in}/nowhere", "--out", "{out}/exp"], "neither a finetune run directory"),
    (["export", "{in}/adapter_v2", "--out", "{out}/exp"], "format version 2, newer"),
    (["export", "{in}/adapter_bad", "--out", "{out}/exp"], "malformed HeadMap adapter config"),
    (["export", "{in}/adapter_hs", "--out", "{out}/exp", "--peft"], "cannot be merged"),
    (["merge", "{in}/adapter_hs", "--out", "{out}/merged"], "cannot be merged"),
    (["merge", "{in}/nowhere", "--out", "{out}/merged"], "neither a finetune run directory"),
    (["export", "{in}/adapter_unknown", "--out", "{out}/exp"], "holds a FROBNICATE adapter, not a HeadMap one"),
    # eval --adapter, export-model
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--adapter", "{in}/adapter_unknown"],
     "PEFT type 'FROBNICATE', which this PEFT does not know"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--adapter", "{in}/adapter_gqa"],
     "was trained on tiny-llama-gqa"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--adapter", "{in}/nowhere"], "neither a finetune run"),
    (["export-model", "tiny-llama", "--out", "{in}/a_file"], "already exists"),
    (["lm-eval", "run", "--model", "hf", "--model_args", "pretrained=tiny,peft={in}/adapter_unknown", "--tasks", "x"],
     "PEFT type 'FROBNICATE'"),
    (["export-model", "tiny-llama", "--out", "{in}"], "already exists"),
    (["export-model", "nope/nope", "--out", "{out}/m"], "cannot load Hugging Face hub model 'nope/nope'"),
    # official-import / official-export / --protocol
    (["official-import", "{in}/missing.pt", "--model", "tiny-llama", "--out", "{out}/c.json"], "not found"),
    (["official-export", "{in}/missing.json", "--out", "{out}/info.pt"], "circuit file not found"),
    (LOCATE + ["--protocol", "nope"], "--protocol: invalid choice: 'nope'"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--protocol", "nope"], "--protocol: invalid choice"),
    # lm-eval-tasks
    (["lm-eval-tasks", "--tasks", "sst2,nope", "--out", "{out}/t"], "--tasks has unknown task 'nope'"),
    (["lm-eval-tasks", "--tasks", "boolq", "--split", "test", "--data-dir", "{data}", "--out", "{out}/t"],
     "has no 'test' split"),
    (["lm-eval-tasks", "--tasks", "sst2", "--data-dir", "{out}/missing", "--out", "{out}/t"], "data directory"),
    (["lm-eval-tasks", "--tasks", "capitals", "--out", "{in}/a_file/t"], "is a file, not a directory"),
    # edges, pairs
    (["edges", "--model", "tiny-llama", "--out", "{out}/e.json"], "give --task (its clean/corrupted pairs) or --pairs"),
    (["edges", "--model", "tiny-llama", "--task", "capitals", "--split", "train", "--out", "{out}/e.json"],
     "task capitals has no corrupted prompts"),
    (["edges", "--model", "tiny-llama", "--pairs", "{in}/pairs_no_answer.jsonl", "--out", "{out}/e.json"],
     "pairs_no_answer.jsonl line 1: needs a non-empty string 'answer'"),
    (["edges", "--model", "tiny-llama", "--pairs", "{in}/missing.jsonl", "--out", "{out}/e.json"], "cannot read"),
    (["edges", "--model", "tiny-llama", "--pairs", "{in}/missing.jsonl", "--out", "{out}/e.json", "--split", "train"],
     "--split and --data-dir choose a task's pairs; with --pairs FILE they do nothing"),
    (["edges", "--model", "tiny-llama", "--task", "add_sub", "--method", "eap", "--metric", "kl", "--out",
      "{out}/e.json"], "--metric kl has zero gradient at the clean run"),
    (["edges", "--model", "tiny-llama", "--task", "add_sub", "--top-n", "5", "--threshold", "0.1", "--out",
      "{out}/e.json"], "--threshold and --top-n both choose the circuit"),
    (["edges", "--model", "tiny-llama", "--task", "add_sub", "--method", "eap", "--steps", "3", "--out",
      "{out}/e.json"], "--steps is read only by --method eap-ig, not eap"),
    (["edges", "--model", "tiny-llama", "--task", "add_sub", "--method", "exact", "--ig-points", "right", "--out",
      "{out}/e.json"], "--ig-points is read only by --method eap-ig, not exact"),
    (["edges", "--model", "tiny-llama", "--task", "add_sub", "--ablation", "mean", "--out", "{out}/e.json"],
     "--ablation is read only when --curve evaluates circuits"),
    (["edges", "--model", "tiny-llama", "--pairs", "{in}/pairs_unequal.jsonl", "--out", "{out}/e.json"],
     "pair 1: the clean prompt has 6 tokens, the corrupted one 7", AFTER_LOAD),
    (["pairs", "--task", "capitals", "--split", "train", "--out", "{out}/p.jsonl"], "no corrupted prompts"),
    (["track", "{in}/nowhere", "--out", "{out}/t"], "no config.json (not a `circuitlab finetune` run directory)"),
    (["held-out", "{in}/missing.json", "--out", "{out}/h"], "missing.json"),
    (["held-out", "{in}/missing.json", "--docs", "0", "--out", "{out}/h"], "docs"),
    (["edges-convert", "{in}/missing.json", "--to", "mib", "--out", "{out}/m.json"], "not found"),
    (["edges-convert", "{in}/tiny.json", "--to", "mib", "--out", "{out}/m.json"], "tiny.json"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c[0][:1] + c[0][-2:]))
def test_bad_input(case, inputs, data_dir, tmp_path, capsys, monkeypatch):
    argv, match, *when = case
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if AFTER_LOAD not in when:
        import circuitlab.models
        import circuitlab.models.loaded

        def no_loading(*args, **kwargs):
            raise AssertionError("a model was loaded before the bad input was found")

        for module, name in ((circuitlab.models, "load_model"), (circuitlab.models.loaded, "load_model"),
                             (circuitlab.models, "load_hf")):  # the bridge, and plain HF models (export, merge)
            monkeypatch.setattr(module, name, no_loading)
    before = sorted(inputs.rglob("*"))
    out = tmp_path / "out"
    one_line_error(capsys, [a.format(**{"in": inputs, "out": out, "data": data_dir}) for a in argv], match)
    assert not out.exists() and sorted(inputs.rglob("*")) == before  # nothing written, nothing left behind


def test_there_are_at_least_forty_and_every_command_has_some():
    from circuitlab.cli import COMMANDS

    assert len(CASES) >= 40
    assert {c[0][0] for c in CASES} >= set(COMMANDS) - {"tasks"}


def test_an_error_while_a_progress_bar_is_open_is_the_last_line(tmp_path, capsys, monkeypatch):
    """The engine fails mid-layer, with the locating bar open: the error is what the user sees last."""
    from circuitlab.core.errors import CircuitlabError
    from circuitlab.locate.engine import Engine
    from tests.helpers import run_cli

    def fail(*args, **kwargs):
        raise CircuitlabError("out of something in the middle of a layer")

    monkeypatch.setattr(Engine, "losses", fail)
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"prompt": "The sky is", "target": " blue"}\n')
    argv = ["locate", "--model", "tiny-llama", "--samples-file", samples, "--out", tmp_path / "c.json"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "%|" not in err and "\r" not in err  # stderr is no terminal here: no bar, no \r lines
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # now someone watches
    code, _, err = run_cli(capsys, *argv)
    visible = [part for line in err.split("\n") for part in line.split("\r") if part.strip()]
    assert code == 2 and "%|" in err  # a bar was drawn
    assert visible[-1] == "circuitlab: error: out of something in the middle of a layer"
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("command", [["eval", "--model", "tiny-llama", "--task", "capitals"], ["tasks"]])
def test_commands_that_run_in_one_process_refuse_torchrun(command, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    one_line_error(capsys, [a.format(**{"in": inputs, "out": tmp_path / "out"}) for a in command],
                   "runs in one process")
