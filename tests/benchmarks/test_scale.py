"""benchmarks/scale.py at the CPU shape: the run CI does in seconds (the numbers themselves are not asserted)."""

import json


def test_cpu_tiny_runs_and_agrees_with_plain(scale, tmp_path):
    out = tmp_path / "tiny.json"
    result = scale.main(["--shape", "cpu-tiny", "--samples", "12", "--plain-layers", "3", "--processes", "1,2",
                         "--json", str(out)])
    assert result["heads_identical_on_plain_layers"]  # the plain algorithm ran on every layer here
    assert json.loads(out.read_text())["circuit"] == result["circuit"]
    layers, heads = scale.SHAPES["cpu-tiny"][:2]
    assert sorted(int(k) for k in result["circuit"]) == list(range(layers))
    assert all(len(v) == result["n"] for v in result["circuit"].values())
    two = result["processes"][2]
    assert len(two["rank_seconds"]) == 1 and len(two["rank_seconds"][0]) == 2  # one round, two processes
    assert two["wall_s"][0] >= max(two["rank_seconds"][0])


def test_samples_have_real_hellaswag_lengths(scale):
    lengths = json.loads(scale.LENGTHS.read_text())["prompt_tokens"]
    data = scale.samples(64, 1000)
    assert [len(e.ids) for e in data] == lengths[:64]
    assert all(len(e.targets) == 1 for e in data)
