"""`circuitlab finetune` from the command line: a run directory with its result, adapter and circuit."""

import json

import pytest

from circuitlab.cli import main
from circuitlab.headmap import HeadMapConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_finetune_bad_input_is_one_line(tmp_path, capsys):
    assert main(["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "adapterx",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--method: invalid choice: 'adapterx'" in err
    assert main(["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "headmap-mha",
                 "--out", str(tmp_path / "x"), "--circuit", str(tmp_path / "missing.json")]) == 2
    assert "circuit file not found" in capsys.readouterr().err


def test_cli_finetune_writes_result(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "headmap-hs", "--heads", "random",
            "--heads-per-layer", "1", "--rank", "4", "--max-train", "4", "--batch-size", "4", "--epochs", "1",
            "--limit", "4", "--out", str(out)]
    assert main(args) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["method"] == "headmap-hs" and r["eval"]["n_docs"] == 4 and set(r["eval"]["metrics"]) >= {"acc", "acc_norm"}
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "circuit.json").is_file()
    assert HeadMapConfig.from_dict(json.loads((out / "adapter" / "adapter_config.json").read_text())).variant == "hs"
    assert "trainable" in capsys.readouterr().out
