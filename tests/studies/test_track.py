"""`circuitlab track`: the edge circuit over a tiny fine-tuning run's checkpoints, checked against set
arithmetic on the step files; the folded checkpoints against PEFT; resuming; the refusals."""

import json

import pytest
import torch
from peft import PeftModel

from circuitlab.cli import main
from circuitlab.core.errors import CircuitlabError
from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.studies.runs import Checkpoint, read_run
from circuitlab.studies.track import load_checkpoint
from circuitlab.finetune import RunOptions, finetune
from circuitlab.models import load_plain
from circuitlab.models import load_hf
from circuitlab.models.placement import placement
from tests.finetune.common import cfg

PAIRS = [
    {"clean": "12 + 5 =", "corrupted": "12 - 5 =", "answer": " 17"},
    {"clean": "31 + 40 =", "corrupted": "31 - 40 =", "answer": " 71"},
    {"clean": "8 + 9 =", "corrupted": "8 - 9 =", "answer": " 17"},
    {"clean": "20 + 3 =", "corrupted": "20 - 3 =", "answer": " 23"},
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-step runs (8 docs, batch 4) on `capitals` keeping every step's adapter, and a pairs file."""
    root = tmp_path_factory.mktemp("track")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for method, extra in (("lora", {}), ("headmap-mha", dict(heads="random", heads_per_layer=1))):
            c = cfg(method=method, max_train=8, epochs=1, eval_limit=2, warmup_steps=0, **extra)
            finetune(load_plain("tiny-llama"), c, root / method, progress=False,
                           options=RunOptions(save_every=1))
            out[method] = root / method
    finally:
        torch.set_num_threads(n)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    out["pairs"] = pairs
    return out


def track(run, pairs, out, *extra) -> int:
    return main(["track", str(run), "--pairs", str(pairs), "--out", str(out), "--no-progress", "--no-png",
                 "--top-n", "12", *extra])


def writer_layer(edge: str) -> int:
    writer = edge.split("->")[0]
    return 0 if writer == "input" else int(writer[1:].split(".")[0])


def expected_change(a: dict, b: dict, n_layers: int) -> dict:
    """Node/edge Jaccard, added/removed and per-layer change, from the step files' JSON alone."""
    ea, eb = {e["edge"]: e["score"] for e in a["edges"]}, {e["edge"]: e["score"] for e in b["edges"]}
    na, nb = set(a["nodes"]), set(b["nodes"])
    per = [0.0] * n_layers
    for edge in set(ea) | set(eb):
        if edge in ea and edge in eb:
            per[writer_layer(edge)] += abs(eb[edge] - ea[edge])
        else:
            per[writer_layer(edge)] += abs(eb.get(edge, ea.get(edge)))
    return {"node_jaccard": len(na & nb) / len(na | nb), "edge_jaccard": len(set(ea) & set(eb)) / len(set(ea) | set(eb)),
            "nodes_added": len(nb - na), "nodes_removed": len(na - nb), "edges_added": len(set(eb) - set(ea)),
            "edges_removed": len(set(ea) - set(eb)), "layer_change": per}


@pytest.mark.usefixtures("one_thread")
def test_track_compares_every_checkpoint_and_resumes(runs, tmp_path):
    out = tmp_path / "track"
    assert track(runs["lora"], runs["pairs"], out) == 0
    t = json.loads((out / "track.json").read_text())
    assert [s["step"] for s in t["steps"]] == [0, 1, 2] and t["headmap"] is None
    docs = [json.loads((out / f"step-{i}.json").read_text()) for i in range(3)]
    assert docs[0]["model"]["fingerprint"] != docs[2]["model"]["fingerprint"]  # the adapter was folded in
    n_layers = docs[0]["model"]["n_layers"]
    for changes, pairs in ((t["vs_previous"], [(0, 1), (1, 2)]), (t["vs_start"], [(0, 1), (0, 2)])):
        for got, (i, j) in zip(changes, pairs):
            want = expected_change(docs[i], docs[j], n_layers)
            assert (got["before"], got["after"]) == (i, j)
            for key in ("node_jaccard", "edge_jaccard", "layer_change"):
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
            for key in ("nodes_added", "nodes_removed", "edges_added", "edges_removed"):
                assert got[key] == want[key], key
    assert t["vs_start"][-1]["edge_jaccard"] < 1  # two steps at lr 1e-2 change the circuit
    assert {f"track_{s}.html" for s in ("similarity", "layer_change", "circuits")} <= {p.name for p in out.iterdir()}

    # Resume: the last step is computed again, the others are reused as they are.
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("step-[01].*")}
    (out / "step-2.json").unlink()
    assert track(runs["lora"], runs["pairs"], out) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("step-[01].*")} == kept
    again = json.loads((out / "track.json").read_text())
    assert again["vs_start"] == t["vs_start"] and again["vs_previous"] == t["vs_previous"]

    # Other settings: refused in one line, nothing overwritten; into another directory they run.
    assert track(runs["lora"], runs["pairs"], out, "--method", "eap") == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("step-[01].*")} == kept
    assert track(runs["lora"], runs["pairs"], out.with_name("eap"), "--method", "eap") == 0
    assert EdgeCircuit.load(out.with_name("eap") / "step-0.json").scores.method == "eap"


@pytest.mark.usefixtures("one_thread")
def test_kv_per_head_tracks_the_ungrouped_model(tmp_path):
    """`--kv per-head` on a grouped-query run: every checkpoint on the library's ungrouped graph (a k and a v
    reader per query head); the base step equals `circuitlab edges --kv per-head` on the base model."""
    run = tmp_path / "run"
    finetune(load_plain("tiny-llama-gqa"), cfg(model="tiny-llama-gqa", method="lora", max_train=4, epochs=1,
                                                eval_limit=2, warmup_steps=0), run, progress=False,
             options=RunOptions(save_every=1))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    assert track(run, pairs, tmp_path / "t", "--kv", "per-head", "--method", "eap") == 0
    assert main(["edges", "--model", "tiny-llama-gqa", "--pairs", str(pairs), "--method", "eap", "--kv", "per-head",
                 "--top-n", "12", "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    reference = EdgeCircuit.load(tmp_path / "e.json")
    steps = [EdgeCircuit.load(p) for p in sorted((tmp_path / "t").glob("step-*.json"))]
    assert len(steps) == 2 and reference.graph.n_kv_heads == reference.graph.n_heads
    assert all(s.graph == reference.graph and s.made_from["settings"]["kv"] == "per-head" for s in steps)
    assert torch.allclose(steps[0].scores.scores, reference.scores.scores, atol=1e-7)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["lora", "headmap-mha"])
def test_a_folded_checkpoint_gives_the_peft_models_logits(runs, method):
    info = read_run(runs[method])
    last = info.checkpoints[-1]
    folded = load_checkpoint("tiny-llama", last, placement("cpu", "float32", None, None))
    peft = PeftModel.from_pretrained(load_hf("tiny-llama")[0], str(last.path)).eval()
    ids = torch.tensor([[1, 5, 9, 30, 2, 7, 11]])
    with torch.no_grad():
        want = peft(input_ids=ids).logits
        got = folded.bridge(ids)
        base = load_checkpoint("tiny-llama", Checkpoint(0, None), placement("cpu", "float32", None, None)).bridge(ids)
    assert not torch.allclose(base, want, atol=1e-4)  # the adapter changes the model
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.usefixtures("one_thread")
def test_a_headmap_mha_run_is_tracked_merged_with_its_heads(runs, tmp_path):
    out = tmp_path / "mha"
    assert track(runs["headmap-mha"], runs["pairs"], out, "--heads") == 0
    t = json.loads((out / "track.json").read_text())
    assert t["headmap"] == "merged into o_proj" and t["located_heads"]
    heads = [{f"{layer}.{h}" for layer, hs in s["heads"].items() for h in hs} for s in t["steps"]]
    for c in t["vs_start"]:
        a, b = heads[0], heads[[s["step"] for s in t["steps"]].index(c["after"])]
        assert c["head_jaccard"] == pytest.approx(len(a & b) / len(a | b))


def fake_run(root, method="lora", peft_type="LORA", variant=None, checkpoint=True, **config):
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model": "tiny-llama", "task": "capitals", "method": method,
                                                  **config}))
    if checkpoint:
        d = root / "checkpoint" / "checkpoint-1"
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "variant": variant}))
    return root


@pytest.mark.parametrize("case, needle", [
    ("hs-run", "HeadMap-HS"), ("hs-adapter", "HeadMap-HS"), ("no-config", "no config.json"),
    ("no-checkpoints", "no checkpoints"), ("no-pairs", "no corrupted prompts"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, monkeypatch, case, needle):
    import circuitlab.studies.track
    import circuitlab.models.sources

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    monkeypatch.setattr(circuitlab.models.sources, "load_hf", no_loading)
    monkeypatch.setattr(circuitlab.studies.track, "load_checkpoint", no_loading)
    run = tmp_path / "run"
    if case == "hs-run":
        fake_run(run, method="headmap-hs+lora", peft_type="HEADMAP", variant="hs")
    elif case == "hs-adapter":
        fake_run(run, peft_type="HEADMAP", variant="hs")
    elif case == "no-config":
        run.mkdir()
    elif case == "no-checkpoints":
        fake_run(run, checkpoint=False)
    else:
        fake_run(run)
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps(PAIRS[0]) + "\n")
    extra = [] if case == "no-pairs" else ["--pairs", str(pairs)]
    code = main(["track", str(run), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("separator", ["task", "newline"])
def test_the_task_pairs_follow_the_runs_separator(tmp_path, monkeypatch, separator):
    """A run trained on `prompt + "\\n" + answer` is tracked on pairs written the same way; a pairs file as it is."""
    import circuitlab.studies.track
    from circuitlab.studies.jobs import track as track_job
    from circuitlab.tasks.arithmetic import split_rows

    seen = []
    monkeypatch.setattr(circuitlab.studies.track, "circuits_over_training", lambda run, out, pairs, *a: seen.append(pairs))
    fake_run(tmp_path / "run", task="add_sub", separator=separator)
    track_job(tmp_path / "run", tmp_path / "out", max_pairs=3)
    rows = split_rows("add_sub", "test")[:3]
    end, space = ("\n", "") if separator == "newline" else ("", " ")
    assert [(p.clean, p.corrupted, p.answer, p.corrupted_answer) for p in seen[0]] == [
        (r.prompt + end, r.corrupted + end, f"{space}{r.answer}", f"{space}{r.corrupted_answer}") for r in rows]
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps(PAIRS[0]) + "\n")
    track_job(tmp_path / "run", tmp_path / "out2", pairs_file=pairs)
    assert [p.clean for p in seen[1]] == [PAIRS[0]["clean"]]
    with pytest.raises(CircuitlabError, match="with --pairs FILE they do nothing"):  # it would not be the file's
        track_job(tmp_path / "run", tmp_path / "out3", pairs_file=pairs, split="test")
