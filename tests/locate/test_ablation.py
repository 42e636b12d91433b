"""Mean and corrupted ablation: the engine equals the plain algorithm under each, each equals a
forward patched by hand, the attribution estimate is the first-order change towards r, the
ablation is recorded (zero as before), and bad input is one line before any model loads."""

import json

import pytest
import torch

from circuitlab.circuits.circuit import Circuit, Sample
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.circuits.heads import HeadMask
from circuitlab.locate import Engine, LocateConfig, PlainEvaluator, locate, locate_to
from circuitlab.locate.ablation import Ablation
from circuitlab.locate.reference import reference_samples
from circuitlab.locate.masking import ablate_heads_hook, hook_z_name, keep_matrix
from circuitlab.evaluate.scoring import encode_pair
from circuitlab.tasks import Doc
from tests.helpers import SAMPLES, close, one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

# The shared samples with corrupted prompts of the same token length (tiny-llama's tokenizer).
CORRUPTED = ["Question: What is the capital of Spain?\nAnswer:", "The grass is",
             "One, two, three, four, six, five, seven, nine, eight,", "Birds and fish are", "3 + 5 ="]
PAIRS = [Sample(s.prompt, s.target, s.index, c) for s, c in zip(SAMPLES, CORRUPTED)]
REFERENCE = [Sample("Paris is the capital of", " France", 10), Sample("Red, green and", " blue", 11),
             Sample("A cat sat on the", " mat", 12)]


def config(ablation: str, **kwargs) -> LocateConfig:
    mean = {"reference": REFERENCE, "ablation_docs": len(REFERENCE)} if ablation == "mean" else {}
    return LocateConfig(ablation=ablation, **mean, **kwargs)


def test_the_hook_is_keep_times_z_plus_the_rest_of_r():
    z, r = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    keep = keep_matrix([(1,), (0, 3)], 4)
    assert torch.equal(ablate_heads_hook(keep)(z), z * keep[:, None, :, None])  # zero: the old product
    out = ablate_heads_hook(keep, r)(z)
    assert torch.equal(out[0, :, 1], r[0, :, 1]) and torch.equal(out[1][:, [0, 3]], r[1][:, [0, 3]])
    assert torch.equal(out[0][:, [0, 2, 3]], z[0][:, [0, 2, 3]])
    mean = torch.randn(4, 5)  # one vector per head, every position
    assert torch.equal(ablate_heads_hook(keep, mean)(z)[1, 2, 3], mean[3])


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gqa"])
@pytest.mark.parametrize("ablation", ["mean", "corrupted"])
def test_engine_equals_plain_algorithm(request, fixture, ablation):
    model = request.getfixturevalue(fixture)
    fast = locate(model, PAIRS, config(ablation, max_batch_tokens=40), progress=False)
    plain = locate(model, PAIRS, config(ablation, plain=True), progress=False)
    assert fast.heads == plain.heads and fast.ablation == plain.ablation == ablation
    assert fast.baseline_loss == pytest.approx(plain.baseline_loss, rel=1e-5)
    assert close(fast.loss_curve, plain.loss_curve) and len(fast.loss_curve) == model.n_layers
    for name, table in plain.scores.items():
        assert all(close(r1, r2) for r1, r2 in zip(fast.scores[name], table))
    zero = locate(model, PAIRS, LocateConfig(max_batch_tokens=40), progress=False)
    assert fast.baseline_loss == pytest.approx(zero.baseline_loss, rel=1e-6)  # nothing masked: no ablation
    effect = [[x - t.baseline_loss for x in t.scores["conditioned"][0]] for t in (fast, zero)]
    assert not close(*effect, rel=0.1)  # what a masked head becomes matters


def loss_by_hand(model, samples, hooks_for) -> float:
    """Eq. 5 written out: one unpadded forward per sample (prompt + target), `hooks_for(i)` applied."""
    total = 0.0
    for i, s in enumerate(samples):
        enc = encode_pair(model.tokenizer, s.prompt, s.target)
        ids = torch.tensor([list(enc.context + enc.continuation)])
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks_for(i)):
            logp = torch.log_softmax(model.hf_model(ids).logits[0].float(), dim=-1)
        n, k = len(enc.context), len(enc.continuation)
        total -= float(logp[n - 1 : n + k - 1].gather(-1, torch.tensor(enc.continuation)[:, None]).mean())
    return total / len(samples)


def cached_z(model, ids: list[int]) -> list[torch.Tensor]:
    """Every layer's hook_z in an unmasked run of `ids`, by a plain copying hook."""
    cache = {}

    def keep(layer):
        def hook(z, hook=None):
            cache[layer] = z.detach().clone()
            return z
        return hook

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(hook_z_name(la), keep(la)) for la in range(model.n_layers)]):
        model.hf_model(torch.tensor([ids]))
    return [cache[la] for la in range(model.n_layers)]


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gqa"])
def test_corrupted_with_every_head_masked_is_the_corrupted_runs_z_everywhere(request, fixture):
    model = request.getfixturevalue(fixture)
    runs = []
    for s in PAIRS:
        clean = encode_pair(model.tokenizer, s.prompt, s.target)
        corrupt = encode_pair(model.tokenizer, s.corrupted, s.target).context + clean.continuation
        runs.append(cached_z(model, list(corrupt)))

    def patch(z_of_layer):
        return lambda z, hook=None: z_of_layer.to(z.dtype)

    expected = loss_by_hand(model, PAIRS, lambda i: [(hook_z_name(la), patch(runs[i][la]))
                                                       for la in range(model.n_layers)])
    every = HeadMask.of({la: range(model.n_heads) for la in range(model.n_layers)})
    ablation = Ablation.build(model, "corrupted", PAIRS)
    assert PlainEvaluator(model, PAIRS, ablation=ablation).loss(every) == pytest.approx(expected, rel=1e-5)
    engine = Engine(model, PAIRS, max_batch_tokens=40, ablation=ablation)
    assert engine.losses(model.n_layers, every, [None])[0] == pytest.approx(expected, rel=1e-5)
    assert engine.losses(model.n_layers - 1, every.before(model.n_layers - 1), [None])[0] != pytest.approx(expected)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gqa"])
def test_mean_of_one_head_is_its_mean_z_over_the_reference_docs(request, fixture):
    model = request.getfixturevalue(fixture)
    layer, head = 1, 3
    zs = [cached_z(model, model.tokenizer(s.prompt + s.target).input_ids)[layer][0, :, head] for s in REFERENCE]
    mean = torch.cat(zs).double().mean(0)  # every position of every reference doc

    def set_mean(z, hook=None):
        z = z.clone()
        z[:, :, head] = mean.to(z.dtype)
        return z

    expected = loss_by_hand(model, SAMPLES, lambda i: [(hook_z_name(layer), set_mean)])
    ablation = Ablation.build(model, "mean", SAMPLES, REFERENCE)
    assert torch.allclose(ablation.mean[layer][head].double(), mean, atol=1e-6)
    mask = HeadMask.of({layer: [head]})
    assert PlainEvaluator(model, SAMPLES, ablation=ablation).loss(mask) == pytest.approx(expected, rel=1e-5)
    assert Engine(model, SAMPLES, max_batch_tokens=40, ablation=ablation).losses(layer, HeadMask(), [head])[0] == \
        pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("ablation", ["mean", "corrupted"])
def test_attribution_is_the_first_order_change_towards_r(tiny_gqa, ablation):
    """The estimate's slope, by central differences: move the most affected head's z a fraction
    +-eps of the way to r (float32 losses: a larger step than a one-sided difference could take)."""
    base, layer, eps = HeadMask.of({0: [1]}), 1, 0.05
    ab = Ablation.build(tiny_gqa, ablation, PAIRS, REFERENCE)
    loss, estimate = Engine(tiny_gqa, PAIRS, max_batch_tokens=40, ablation=ab).attribution(layer, base)
    plain = PlainEvaluator(tiny_gqa, PAIRS, ablation=ab)
    assert loss == pytest.approx(plain.loss(base), rel=1e-5)
    head = max(range(tiny_gqa.n_heads), key=lambda h: abs(estimate[h] - loss))
    lengths = [len(e.ids) + 1 for e in plain.encoded]
    r = ab.padded(layer, range(len(PAIRS)), lengths, max(lengths))
    nudged = []
    for step in (eps, -eps):
        keep = torch.ones(1, tiny_gqa.n_heads)
        keep[0, head] = 1 - step
        with tiny_gqa.bridge.hooks(fwd_hooks=[(hook_z_name(layer), ablate_heads_hook(keep, r))]):
            nudged.append(plain.loss(base))
    assert estimate[head] - loss == pytest.approx((nudged[0] - nudged[1]) / (2 * eps), rel=0.05)
    _, zero_estimate = Engine(tiny_gqa, PAIRS).attribution(layer, base)
    assert not close([x - loss for x in estimate], [x - loss for x in zero_estimate], rel=0.1)  # r matters


def test_prescreen_runs_under_the_ablation(tiny_gqa):
    found = locate(tiny_gqa, PAIRS[:3], config("corrupted", n_per_layer=2, prescreen=3), progress=False)
    exact, estimate = found.scores["conditioned"], found.scores["conditioned_estimate"]
    for layer in range(tiny_gqa.n_layers):
        evaluated = [h for h, x in enumerate(exact[layer]) if x == x]
        assert evaluated == sorted(sorted(range(8), key=lambda h: (-estimate[layer][h], h))[:3])


def test_sdpa_applies_the_ablation_where_the_bridge_would(tiny_gqa):
    ab = Ablation.build(tiny_gqa, "corrupted", PAIRS)
    base, sel = HeadMask.of({0: [1], 1: [2, 5]}), HeadMask.of({0: [1], 1: [2, 5], 2: [4], 3: [0, 6]})
    sdpa = Engine(tiny_gqa, PAIRS, max_batch_tokens=40, attention="sdpa", ablation=ab)
    plain = PlainEvaluator(tiny_gqa, PAIRS, ablation=ab)
    assert close(sdpa.losses(2, base, [None, 0, 3]), plain.losses(2, base, [None, 0, 3]))
    assert close(sdpa.curve(sel, [0, 1, 2, 3]), plain.curve(sel, [0, 1, 2, 3]))


def worker(rank: int, world: int, port: int, out: str) -> None:
    """One process of a two-process run under each ablation (the corrupted one prescreened)."""
    import os
    from pathlib import Path

    from circuitlab.core.processes import start
    from circuitlab.models import load_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    start("cpu")
    model = load_model("tiny-llama-gqa")
    for name, more in DISTRIBUTED.items():
        locate_to(Path(out) / f"{name}.json", model, PAIRS, config(name, **more), progress=False)


DISTRIBUTED = {"mean": {"n_per_layer": 2, "max_batch_tokens": 40},
               "corrupted": {"n_per_layer": 2, "prescreen": 3, "max_batch_tokens": 40}}


def test_two_processes_give_the_one_process_circuits(tiny_gqa, tmp_path):
    import torch.multiprocessing as mp

    from tests.helpers import free_port

    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for name, more in DISTRIBUTED.items():
        two = Circuit.load(tmp_path / f"{name}.json")
        one = locate(tiny_gqa, PAIRS, config(name, **more), progress=False)
        assert two.run.processes == 2 and two.heads == one.heads and close(two.loss_curve, one.loss_curve)
        for table, theirs in one.scores.items():
            assert all(close(r1, r2) for r1, r2 in zip(two.scores[table], theirs)), table


def test_the_circuit_and_checkpoint_record_the_ablation(tiny, tmp_path):
    out = tmp_path / "c.json"
    mean = locate_to(out, tiny, PAIRS[:2], config("mean", n_per_layer=1), progress=False)
    saved = json.loads(out.read_text())
    assert saved["ablation"] == "mean" and [s["index"] for s in saved["reference"]] == [10, 11, 12]
    assert saved["samples"][0]["corrupted"] == CORRUPTED[0]
    back = Circuit.load(out)
    assert back.ablation == "mean" and back.reference == REFERENCE and back.samples == PAIRS[:2]
    assert back.to_dict() == mean.to_dict()

    # zero: nothing new in the file, and an old file without the keys means zero.
    zero = locate(tiny, SAMPLES[:2], LocateConfig(n_per_layer=1), progress=False).to_dict()
    assert "ablation" not in zero and "reference" not in zero and "corrupted" not in zero["samples"][0]
    assert Circuit.from_dict(zero).ablation == "zero" and Circuit.from_dict(zero).reference == []
    assert mean.run.settings != locate(tiny, PAIRS[:2], LocateConfig(n_per_layer=1), progress=False).run.settings

    # A partial run made under one ablation is not taken over by another, nor by other reference docs.
    class Stop(Exception):
        pass

    def stop(step):
        raise Stop

    out = tmp_path / "d.json"
    with pytest.raises(Stop):
        locate_to(out, tiny, PAIRS[:2], config("mean", n_per_layer=1), progress=False, on_step=stop)
    with pytest.raises(CircuitlabError, match="unfinished circuit with other settings .differs in: ablation"):
        locate_to(out, tiny, PAIRS[:2], config("corrupted", n_per_layer=1), progress=False)
    other = LocateConfig(ablation="mean", reference=REFERENCE[:2], ablation_docs=2, n_per_layer=1)
    with pytest.raises(CircuitlabError, match="unfinished circuit with other settings .differs in: reference"):
        locate_to(out, tiny, PAIRS[:2], other, progress=False)
    assert locate_to(out, tiny, PAIRS[:2], config("mean", n_per_layer=1), progress=False).run.resumed_steps == 1


def test_the_library_refuses_what_an_ablation_cannot_run_with(tiny):
    with pytest.raises(ConfigError, match="corrupted needs each sample's corrupted prompt; 5 of the 5"):
        locate(tiny, SAMPLES, LocateConfig(ablation="corrupted"), progress=False)
    with pytest.raises(ConfigError, match="mean needs reference docs"):
        locate(tiny, SAMPLES, LocateConfig(ablation="mean"), progress=False)
    with pytest.raises(ConfigError, match="ablation_docs 4 is too many: only 3"):
        LocateConfig(ablation="mean", reference=REFERENCE, ablation_docs=4)
    with pytest.raises(ConfigError, match="ablation must be one of zero, mean, corrupted"):
        LocateConfig(ablation="resample")
    longer = [Sample("The sky is", " blue", 0, "The sky over the sea is")]
    with pytest.raises(CircuitlabError, match="its corrupted prompt is 6 tokens, the prompt 3"):
        locate(tiny, longer, LocateConfig(ablation="corrupted"), progress=False)


def test_reference_docs_are_the_first_that_are_not_samples():
    pool = [Doc(f"q{i}", (" a", " b"), 0, i) for i in range(6)]
    picked = reference_samples(pool, [Sample("q1", " a", 1), Sample("q4", " a", 4)], 3)
    assert [s.index for s in picked] == [0, 2, 3] and picked[0] == Sample("q0", " a", 0)


# ---------------------------------------------------------------- the command line


@pytest.fixture
def files(tmp_path):
    """A custom task of clean/corrupted pairs (6 rows), a task without pairs, a samples file."""
    rows = [{"prompt": p.prompt, "choices": [p.target, " nothing"], "gold": 0, "corrupted": p.corrupted}
            for p in PAIRS] + [{"prompt": "Red, green and", "choices": [" blue", " nine"], "gold": 0,
                                "corrupted": "Red, yellow and"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "plain.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "corrupted"}) + "\n"
                                                  for r in rows))
    (tmp_path / "samples.jsonl").write_text(json.dumps({"prompt": "Hot and", "target": " cold"}) + "\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps({**rows[0], "corrupted": 3}) + "\n")
    return tmp_path


def locate_argv(d, *more):
    return ["locate", "--model", "tiny-llama", "--out", f"{d}/out/c.json", "--no-progress", *more]


@pytest.mark.parametrize("more, match", [
    (["--task", "capitals", "--ablation", "corrupted"],
     "--ablation corrupted needs clean/corrupted pairs, but task capitals has no corrupted prompt"),
    (["--task", "{d}/plain.jsonl", "--ablation", "corrupted"], "task plain has no corrupted prompt for 6 of its 6"),
    (["--samples-file", "{d}/samples.jsonl", "--ablation", "corrupted"], "the samples file has no corrupted"),
    (["--task", "{d}/pairs.jsonl", "--samples", "2", "--ablation", "mean", "--ablation-docs", "5"],
     "--ablation-docs 5 is too many: the mean ablation's reference docs are docs of train that are not among "
     "the 2 samples, and train has 6 docs"),
    (["--samples-file", "{d}/samples.jsonl", "--ablation", "mean"], "--ablation mean takes its reference docs"),
    (["--task", "{d}/pairs.jsonl", "--ablation", "resample"], "--ablation: invalid choice: 'resample'"),
    (["--task", "{d}/pairs.jsonl", "--ablation", "mean", "--ablation-docs", "0"],
     "--ablation-docs must be a positive integer"),
    (["--task", "{d}/bad.jsonl", "--ablation", "corrupted"], "'corrupted' must be a string"),
])
def test_bad_input_is_one_line_before_the_model_loads(files, capsys, monkeypatch, more, match):
    import circuitlab.models
    import circuitlab.models.loaded

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    for module in (circuitlab.models, circuitlab.models.loaded):
        monkeypatch.setattr(module, "load_model", no_loading)
    before = sorted(files.rglob("*"))
    one_line_error(capsys, locate_argv(files, *[a.format(d=files) for a in more]), match)
    assert sorted(files.rglob("*")) == before  # nothing written


def test_the_cli_locates_under_each_ablation(files, capsys):
    task = str(files / "pairs.jsonl")
    code, out, err = run_cli(capsys, *locate_argv(files, "--task", task, "--samples", "3", "--heads-per-layer", "1",
                                                  "--protocol", "official", "--ablation", "corrupted"))
    assert code == 0, err
    assert "corrupted ablation" in out
    c = Circuit.load(files / "out" / "c.json")
    assert c.ablation == "corrupted" and all(s.corrupted for s in c.samples) and len(c.samples) == 3
    code, out, err = run_cli(capsys, *locate_argv(files, "--task", task, "--samples", "3", "--heads-per-layer", "1",
                                                  "--protocol", "official", "--ablation", "mean",
                                                  "--ablation-docs", "3", "--out", f"{files}/out/mean.json"))
    assert code == 0, err
    c = Circuit.load(files / "out" / "mean.json")
    taken = {s.index for s in c.samples}
    assert c.ablation == "mean" and len(c.reference) == 3 and not taken & {s.index for s in c.reference}
    assert [s.index for s in c.reference] == sorted(set(range(6)) - taken)[:3]
