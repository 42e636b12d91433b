"""Bad inputs of issue 37, one kind per case: damaged weight files, model directories that are not models, head
lists that are not head lists, outputs that cannot be written, the environment's hub flags, pickles refused. Each
is one line on stderr (`circuitlab: error: ...`), exit code 2, no traceback, nothing written; and, unless the
weights are needed to tell, found before any model loads (the pattern of test_bad_input.py)."""

import json
import os

import pytest
import torch

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from tests.helpers import one_line_error

AFTER_LOAD = "after-load"


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny):
    from peft import get_peft_model

    from circuitlab.headmap import HeadMapConfig, base_info, register
    from circuitlab.models import tiny_model

    d = tmp_path_factory.mktemp("bad")
    plain, _ = tiny_model("tiny-llama")
    register()
    config = HeadMapConfig(variant="mha", heads={0: [1]}, r=2, base_model=base_info(plain, "tiny-llama"))
    good = d / "adapter_good"
    get_peft_model(tiny_model("tiny-llama")[0], config).save_pretrained(good)
    weights = (good / "adapter_model.safetensors").read_bytes()
    for name, data in (("adapter_empty", b""), ("adapter_truncated", weights[:-7]),
                       ("adapter_garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"), ("adapter_missing", None)):
        (d / name).mkdir()
        (d / name / "adapter_config.json").write_bytes((good / "adapter_config.json").read_bytes())
        if data is not None:
            (d / name / "adapter_model.safetensors").write_bytes(data)
    pickled = d / "adapter_pickle"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_bytes((good / "adapter_config.json").read_bytes())
    from pathlib import PurePosixPath

    torch.save({"w": PurePosixPath("not a tensor")}, pickled / "adapter_model.bin")  # refused by weights_only
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (d / "empty_weights").mkdir()
    (d / "empty_weights" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}))
    (d / "empty_weights" / "model.safetensors").write_bytes(b"")
    circuit = Circuit(ModelInfo.of(tiny), TaskInfo("capitals", "train"), [], "hand-made", 1, {0: [1], 2: [3]})
    doc = circuit.to_dict()
    (d / "twice.json").write_text(json.dumps({**doc, "heads": {"0": [1, 1], "2": [3]}}))
    (d / "fraction.json").write_text(json.dumps({**doc, "heads": {"0": [1.5], "2": [3]}}))
    (d / "layer_name.json").write_text(json.dumps({**doc, "heads": {"first": [1]}}))
    pairs = d / "pairs.jsonl"
    pairs.write_text('{"clean": "12 + 5 =", "corrupted": "12 - 5 =", "answer": " 17"}\n')
    from circuitlab.edges.config import EdgesConfig
    from circuitlab.edges.pairs import read_pairs
    from circuitlab.edges.run import edges_to

    edges_to(d / "edges.json", tiny, read_pairs(None, pairs)[0], EdgesConfig(method="eap",
                                                                                             top_n=5), progress=False)
    other = json.loads((d / "edges.json").read_text())
    other["model"]["fingerprint"] = "0123456789abcdef"  # the same shape, other weights: every edge name exists
    (d / "other_edges.json").write_text(json.dumps(other))
    (d / "other_edges.safetensors").write_bytes((d / "edges.safetensors").read_bytes())
    from pathlib import PurePosixPath as NotATensor

    from circuitlab.models.export import export_model

    export_model("tiny-llama", d / "pickled_model")
    (d / "pickled_model" / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": NotATensor("x")}, d / "pickled_model" / "pytorch_model.bin")
    (d / "loop").symlink_to(d / "loop")
    (d / "loop_dir").symlink_to(d / "loop_dir")
    return d


EVAL = ["eval", "--model", "tiny-llama", "--task", "capitals", "--limit", "2"]
CASES = [
    # damaged weight files: eval --adapter, export, merge
    (EVAL + ["--adapter", "{in}/adapter_empty"], "adapter_empty/adapter_model.safetensors is empty (0 bytes)"),
    (EVAL + ["--adapter", "{in}/adapter_truncated"], "adapter_model.safetensors is damaged: its tensors do not fill"),
    (EVAL + ["--adapter", "{in}/adapter_missing"], "adapter_missing/adapter_model.safetensors is missing"),
    (["export", "{in}/adapter_garbage", "--out", "{out}/exp"], "adapter_model.safetensors is damaged"),
    (["export", "{in}/adapter_missing", "--out", "{out}/exp"], "adapter_model.safetensors is missing"),
    (["merge", "{in}/adapter_empty", "--out", "{out}/merged"], "adapter_model.safetensors is empty"),
    (["merge", "{in}/adapter_truncated", "--out", "{out}/merged"], "adapter_model.safetensors is damaged"),
    (["merge", "{in}/adapter_missing", "--out", "{out}/merged"], "adapter_model.safetensors is missing"),
    # model directories
    (["eval", "--model", "{in}/not_a_model", "--task", "capitals"],
     "not_a_model/config.json is not a model's config.json: no positive integer num_hidden_layers"),
    (["eval", "--model", "{in}/empty_weights", "--task", "capitals"],
     "model weights {in}/empty_weights/model.safetensors is empty (0 bytes)"),
    # head lists
    (["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "headmap-mha", "--circuit",
      "{in}/twice.json", "--out", "{out}/run"], "twice.json: ValueError: layer 0 lists head 1 more than once"),
    (["official-export", "{in}/twice.json", "--out", "{out}/info.pt"], "layer 0 lists head 1 more than once"),
    (["plot", "{in}/fraction.json", "--out", "{out}/figs"], "layer 0: heads [1.5] are not a list of integers"),
    (["plot", "{in}/layer_name.json", "--out", "{out}/figs"], "layer 'first' is not an integer"),
    # outputs
    (["locate", "--model", "tiny-llama", "--task", "capitals", "--max-docs", "5", "--out", "{in}/loop"],
     "loop is a symbolic link that leads nowhere"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--out", "{in}/loop_dir/r.json"],
     "loop_dir is a symbolic link that leads nowhere"),
    # the environment's hub flags
    (["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "lora", "--out", "{out}/run",
      "ENV:HF_HUB_OFFLINE="], "HF_HUB_OFFLINE='' in the environment is neither true"),
    (EVAL + ["ENV:TRANSFORMERS_OFFLINE=maybe"], "TRANSFORMERS_OFFLINE='maybe' in the environment"),
    # lm-eval's model arguments, checked before lm-eval starts (a missing path was asked of the hub, ~30 s)
    (["lm-eval", "run", "--model", "hf", "--model_args", "pretrained=org/model,peft={in}/nowhere", "--tasks", "x"],
     "--model_args peft={in}/nowhere: no such directory"),
    (["lm-eval", "run", "--model", "hf", "--model_args", "pretrained=org/model,peft={in}/twice.json", "--tasks",
      "x"], "peft={in}/twice.json is a file, not an adapter directory"),
    (["lm-eval", "run", "--model", "hf", "--model_args", "pretrained={in}/nowhere", "--tasks", "x"],
     "--model_args pretrained={in}/nowhere: no such directory"),
    (["lm-eval", "run", "--model", "hf", "--model_args", "pretrained={in}/not_a_model", "--tasks", "x"],
     "not_a_model/config.json is not a model's config.json"),
    (["lm-eval", "run", "--model", "hf", "--model_args", "pretrained=org/model,peft={in}/adapter_empty", "--tasks",
      "x"], "adapter_model.safetensors is empty"),
    # an edge circuit of another model's weights as --edges (its edge names all exist here)
    (["edges", "--model", "tiny-llama", "--pairs", "{in}/pairs.jsonl", "--method", "exact", "--edges",
      "{in}/other_edges.json", "--edges-top", "5", "--out", "{out}/e.json"],
     "was scored on tiny-llama with weight fingerprint 0123456789abcdef", AFTER_LOAD),
    # pickles: refused by torch's weights_only loader, and said in one line naming the file
    (EVAL + ["--adapter", "{in}/adapter_pickle"], "adapter_pickle/adapter_model.bin: refused to unpickle it",
     AFTER_LOAD),
    (["eval", "--model", "{in}/pickled_model", "--task", "capitals", "--limit", "2"],
     "pickled_model': refused to unpickle its weights (only tensors are loaded from pickles): Weights only load "
     "failed", AFTER_LOAD),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c[0][:1] + c[0][-2:]))
def test_bad_file(case, bad, tmp_path, capsys, monkeypatch):
    argv, match, *when = case
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for a in argv:
        if a.startswith("ENV:"):
            name, _, value = a[4:].partition("=")
            monkeypatch.setenv(name, value)
    argv = [a for a in argv if not a.startswith("ENV:")]
    if AFTER_LOAD not in when:
        import circuitlab.models
        import circuitlab.models.loaded

        def no_loading(*args, **kwargs):
            raise AssertionError("a model was loaded before the bad input was found")

        for module, name in ((circuitlab.models, "load_model"), (circuitlab.models.loaded, "load_model"),
                             (circuitlab.models, "load_hf")):
            monkeypatch.setattr(module, name, no_loading)
    before = sorted(os.listdir(bad))
    out = tmp_path / "out"
    fill = {"in": bad, "out": out}
    one_line_error(capsys, [a.format(**fill) for a in argv], match.format(**fill))
    assert not out.exists() and sorted(os.listdir(bad)) == before  # nothing written, nothing left behind
    assert os.path.islink(bad / "loop") and os.path.islink(bad / "loop_dir")  # the links are not replaced
