"""A user's whole workflow on stock tools, as one test: locate -> finetune -> export (a stock PEFT LoRA) -> a process
without circuitlab loads it with stock PEFT and merges it -> the real `lm_eval` command scores the HeadMap adapter
(through `circuitlab lm-eval`) and the stock LoRA (plain `lm_eval`) -> `circuitlab eval --adapter`. Every tool gives
the same logits and the same per-document predictions."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from circuitlab.cli import main
from circuitlab.core.io import cache_dir
from circuitlab.models.names import resolve
from circuitlab.headmap import register
from tests.helpers import IDS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
LIMIT = 8

WITHOUT_CIRCUITLAB = """
import json, sys
sys.modules["circuitlab"] = None  # this process cannot import circuitlab
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base, lora, ids = sys.argv[1], sys.argv[2], torch.tensor(json.loads(sys.argv[3]))
out = {}
with torch.no_grad():
    for dtype in (torch.float32, torch.float64):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        out[f"adapted {dtype}"] = PeftModel.from_pretrained(model, lora).eval()(input_ids=ids).logits.tolist()
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attention_bias=True)  # o_proj gets a bias
        merged = PeftModel.from_pretrained(model, lora).merge_and_unload().eval()
        out[f"merged {dtype}"] = merged(input_ids=ids).logits.tolist()
print(json.dumps(out))
"""


def cli(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def lm_eval_predictions(out: Path) -> list[int]:
    """The argmax of each logged document's choice log-likelihoods, in document order."""
    [path] = glob.glob(str(out / "**" / "samples_circuitlab_capitals_*.jsonl"), recursive=True)
    samples = sorted((json.loads(line) for line in Path(path).read_text().splitlines()), key=lambda s: s["doc_id"])
    lls = [[float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]] for s in samples]
    return [max(range(len(ll)), key=lambda i: (ll[i], -i)) for ll in lls]


def lm_eval(command: list[str], base: Path, adapter: Path, tasks: Path, out: Path) -> list[int]:
    run = subprocess.run([*command, "run", "--model", "hf", "--model_args",
                          f"pretrained={base},peft={adapter},dtype=float32", "--include_path", str(tasks), "--tasks",
                          "circuitlab_capitals", "--limit", str(LIMIT), "--batch_size", "4", "--device", "cpu",
                          "--log_samples", "--output_path", str(out)],
                         capture_output=True, text=True, env=ENV, cwd=REPO, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return lm_eval_predictions(out)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", ["tiny-llama", pytest.param("smollm2-135m", marks=pytest.mark.smollm2)])
def test_locate_finetune_export_and_load_anywhere(tmp_path, model):
    circuit, run, exported, base = (tmp_path / n for n in ("c.json", "run", "exported", "base"))
    cli("locate", "--model", model, "--task", "capitals", "--samples", "4", "--max-docs", "24",
        "--heads-per-layer", "1", "--out", circuit, "--no-progress")
    cli("finetune", "--model", model, "--task", "capitals", "--method", "headmap-mha", "--circuit", circuit,
        "--rank", "4", "--max-train", "8", "--batch-size", "4", "--epochs", "2", "--warmup-steps", "0", "--lr", "0.05",
        "--limit", str(LIMIT), "--out", run)
    cli("export", run, "--out", exported, "--lora")
    cli("export-model", model, "--out", base)
    cli("eval", "--model", model, "--task", "capitals", "--adapter", run, "--limit", LIMIT, "--out",
        tmp_path / "eval.json")
    cli("lm-eval-tasks", "--tasks", "capitals", "--out", tmp_path / "tasks")

    hub_id = resolve(model).hf_id  # the alias or hub id, on any machine: never a path of this one
    for written in (run / "adapter", exported, exported / "lora"):
        text = (written / "adapter_config.json").read_text()
        assert json.loads(text)["base_model_name_or_path"] == hub_id
        assert str(tmp_path) not in text and str(cache_dir()) not in text and str(Path.home()) not in text
        assert "THIS_DIR" in (written / "README.md").read_text()  # the card: how to load it
    base_model = json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model"]  # HeadMap's own record
    assert base_model["name"] == model and base_model["hf_id"] == hub_id and len(base_model["fingerprint"]) == 16

    register()
    want = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):
            headmap = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), run / "adapter")
            want[dtype] = headmap.eval()(input_ids=IDS).logits
        assert (want[torch.float32] - AutoModelForCausalLM.from_pretrained(base)(IDS).logits).abs().max() > 1e-3
    other = subprocess.run([sys.executable, "-c", WITHOUT_CIRCUITLAB, str(base), str(exported / "lora"),
                            json.dumps(IDS.tolist())], capture_output=True, text=True, env=ENV, timeout=600)
    assert other.returncode == 0, other.stderr[-3000:]
    got = {k: torch.tensor(v, dtype=torch.float64 if "float64" in k else torch.float32)
           for k, v in json.loads(other.stdout.strip().splitlines()[-1]).items()}
    # The conversion is exact but for float32 rounding (lora_B's bias U b_D + b_U is stored in float32): in float64
    # the stock LoRA (adapted or merged) gives HeadMap's logits within 1e-6, or within what running in float32 costs
    # HeadMap itself, e (benchmarks/results/lora_export.json: tiny-llama 9e-8; smollm2 1.8e-5 with e = 5e-5). In
    # float32 each side also rounds on its own: within 1e-5, or 3e (each side's own rounding, plus the conversion's).
    e = (want[torch.float32].double() - want[torch.float64]).abs().max().item()
    for way in ("adapted", "merged"):
        torch.testing.assert_close(got[f"{way} torch.float64"], want[torch.float64], atol=max(1e-6, e), rtol=0, msg=way)
        torch.testing.assert_close(got[f"{way} torch.float32"], want[torch.float32], atol=max(1e-5, 3 * e), rtol=0,
                                   msg=way)

    ours = json.loads((tmp_path / "eval.json").read_text())["predictions"]
    preds = [p["pred"] for p in ours]
    assert preds == json.loads((run / "result.json").read_text())["eval"]["preds"]  # the run's own evaluation
    assert lm_eval([sys.executable, "-m", "circuitlab", "lm-eval"], base, run / "adapter", tmp_path / "tasks",
                   tmp_path / "lm-eval-headmap") == preds
    assert lm_eval([sys.executable, "-m", "lm_eval"], base, exported / "lora", tmp_path / "tasks",
                   tmp_path / "lm-eval-lora") == preds


@pytest.mark.usefixtures("one_thread")
def test_lm_eval_scores_a_headmap_hs_adapter_as_circuitlab_eval(tmp_path):
    """The hidden-state variant, which no LoRA can hold, through the real `lm_eval` (via `circuitlab lm-eval`)."""
    from peft import get_peft_model

    from circuitlab.headmap import HeadMapConfig, base_info
    from circuitlab.models import load_plain

    plain = load_plain("tiny-llama")
    config = HeadMapConfig(variant="hs", heads={0: [1, 2], 2: [3]}, r=4, task_type="CAUSAL_LM",
                           base_model=base_info(plain.hf_model, "tiny-llama", "tiny-llama"))
    register()
    hs = get_peft_model(plain.hf_model, config)
    with torch.no_grad():  # a map that does something: Up starts at zero
        torch.manual_seed(0)
        ups = [p for name, p in hs.named_parameters() if "headmap_map" in name and ".up." in name]
        assert len(ups) == 4  # weight and bias of the two layers' maps
        for p in ups:
            p.normal_(0, 0.5)
    hs.save_pretrained(tmp_path / "hs")
    cli("export-model", "tiny-llama", "--out", tmp_path / "base")
    cli("lm-eval-tasks", "--tasks", "capitals", "--out", tmp_path / "tasks")
    for adapter, out in ((tmp_path / "hs", "with"), (None, "without")):
        cli("eval", "--model", "tiny-llama", "--task", "capitals", "--limit", LIMIT, "--out", tmp_path / f"{out}.json",
            *(["--adapter", adapter] if adapter else []))
    ours = [[p["pred"] for p in json.loads((tmp_path / f"{o}.json").read_text())["predictions"]]
            for o in ("with", "without")]
    assert ours[0] != ours[1]  # the adapter changes the predictions
    assert lm_eval([sys.executable, "-m", "circuitlab", "lm-eval"], tmp_path / "base", tmp_path / "hs",
                   tmp_path / "tasks", tmp_path / "lm-eval") == ours[0]
