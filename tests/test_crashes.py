"""A crash at every write boundary of every resumable job, injected through `circuitlab.core.io.fault_hook` (not by
timing): the rerun of the same call leaves exactly the files an uninterrupted run leaves, byte for byte (JSON
compared without the durations it records), and nothing else (no temp file, no partial state, no lock file).

The boundaries of each job are found by running it once with a hook that records them, so a new write in a job
is covered without listing it here; the tests below also name the boundaries each job must have."""

import json
from pathlib import Path

import pytest
import torch

from circuitlab.core import io
from circuitlab.core.errors import CircuitlabError
from tests.helpers import SAMPLES, crash_hook, without_durations

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(root: Path) -> dict[str, object]:
    """Every file under `root` (hidden ones too): JSON as its content without durations, the rest as bytes."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            files[p.relative_to(root).as_posix()] = (without_durations(json.loads(data)) if p.suffix == ".json"
                                                     else data)
    return files


def boundaries_of(job, root: Path, monkeypatch) -> list[str]:
    seen = []
    monkeypatch.setattr(io, "fault_hook", seen.append)
    job(root)
    monkeypatch.setattr(io, "fault_hook", None)
    return seen


def crash_then_rerun(job, root: Path, k: int, monkeypatch, finished: str | None = None) -> str:
    """Run `job(root)` crashing at its k-th write boundary, then again without; the crashing boundary's name.
    `finished`: what a command that writes a new directory says when the crash came after it was in place (the
    rerun refuses in one line; the files must still be the uninterrupted run's)."""
    seen = []
    monkeypatch.setattr(io, "fault_hook", crash_hook(k, seen))
    with pytest.raises(io.Crash):
        job(root)
    monkeypatch.setattr(io, "fault_hook", None)
    if finished is not None and seen[-1].startswith("directory renamed"):
        with pytest.raises(CircuitlabError, match=finished):
            job(root)
    else:
        job(root)
    return seen[-1]


def check_every_boundary(job, tmp_path, monkeypatch, finished: str | None = None) -> list[str]:
    """The uninterrupted run's files, then for every boundary: crash there, rerun, compare."""
    names = boundaries_of(job, tmp_path / "straight", monkeypatch)
    expected = snapshot(tmp_path / "straight")
    for k, name in enumerate(names, 1):
        root = tmp_path / f"crash{k}"
        assert crash_then_rerun(job, root, k, monkeypatch, finished) == name
        got = snapshot(root)
        assert sorted(got) == sorted(expected), f"crash at {name!r}"
        for rel in expected:
            assert got[rel] == expected[rel], f"crash at {name!r}: {rel} differs"
    return names


def test_edges(tmp_path, monkeypatch):
    """The running sum's batches: a crash between a batch's tensors and its state.json counted that batch twice."""
    from circuitlab.edges.config import EdgesConfig
    from circuitlab.edges.pairs import Pair
    from circuitlab.edges.run import edges_to
    from circuitlab.models import load_model

    model = load_model("tiny-llama-gqa")
    pairs = [Pair(f"{a} + {b} =", f"{a} - {b} =", f" {a + b}") for a, b in ((12, 5), (31, 40), (8, 9))]
    cfg = EdgesConfig(method="eap", batch_size=1, top_n=20)
    names = check_every_boundary(lambda root: edges_to(root / "e.json", model, pairs, cfg, progress=False),
                                 tmp_path, monkeypatch)
    assert names[:3] == [names[0], names[1], "file written, not renamed: state.json"]
    assert names[0].startswith("file written, not renamed: tensors-")
    assert names[-3:] == ["file written, not renamed: e.json", "file renamed: e.json",
                          "result written, partial state not removed: e.json"]
    assert sum(n == "file renamed: state.json" for n in names) == 3  # one commit per batch


def test_locate(tmp_path, monkeypatch):
    from circuitlab.locate import LocateConfig, locate_to
    from circuitlab.models import load_model

    model = load_model("tiny-llama")
    config = LocateConfig(n_per_layer=1, max_batch_tokens=64)
    names = check_every_boundary(lambda root: locate_to(root / "c.json", model, SAMPLES[:2], config,
                                                        progress=False), tmp_path, monkeypatch)
    assert names.count("file renamed: state.json") >= 4  # one commit per finished step
    assert names[-1] == "result written, partial state not removed: c.json"


def test_finetune_and_its_checkpoints(tmp_path, monkeypatch):
    """Killed inside a Trainer checkpoint (it lacks trainer_state.json: skipped and removed, the run resumes from
    the one before), between checkpoints, while the adapter is written, and after the result: the same run."""
    from circuitlab.finetune import finetune
    from circuitlab.models.plain import load_plain
    from tests.finetune.common import cfg, tiny_circuit

    circuit = tiny_circuit(load_plain("tiny-llama"), tmp_path)
    config = cfg(circuit=circuit, epochs=2, max_train=4, batch_size=2, eval_limit=4)

    def job(root):
        finetune(load_plain("tiny-llama"), config, root / "run", progress=False)

    names = check_every_boundary(job, tmp_path, monkeypatch)
    for inside in ("checkpoint adapter written: checkpoint-2", "checkpoint optimizer written: checkpoint-2",
                   "checkpoint RNG state written, trainer state not: checkpoint-4",
                   "directory filled, not renamed: adapter", "removed with the partial state: checkpoint"):
        assert inside in names


def test_an_incomplete_checkpoint_is_skipped_and_removed(tmp_path):
    from circuitlab.finetune.trainer import checkpoint_problem, last_complete_checkpoint

    for step, files in ((2, {"trainer_state.json": '{"global_step": 2}', "optimizer.pt": "x", "scheduler.pt": "x"}),
                        (4, {"trainer_state.json": '{"global_st', "optimizer.pt": "x", "scheduler.pt": "x"}),
                        (6, {"optimizer.pt": "x"})):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
        from safetensors.torch import save_file

        save_file({"w": torch.ones(2)}, str(d / "adapter_model.safetensors"))
    assert checkpoint_problem(tmp_path / "checkpoint-4") == "no complete trainer_state.json"
    assert last_complete_checkpoint(tmp_path, remove=False) == str(tmp_path / "checkpoint-2")
    assert len(list(tmp_path.iterdir())) == 3
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]


def test_export_model(tmp_path, monkeypatch):
    from circuitlab.models.export import export_model

    names = check_every_boundary(lambda root: export_model("tiny-llama", root / "m"), tmp_path, monkeypatch,
                                 finished="already exists; export-model writes a new directory")
    assert names == ["directory filled, not renamed: m", "directory renamed: m"]


def test_merge_and_export(tmp_path, monkeypatch):
    from peft import get_peft_model

    from circuitlab.headmap import HeadMapConfig, base_info, register
    from circuitlab.headmap.conversion import export, merge
    from circuitlab.models import tiny_model

    plain, _ = tiny_model("tiny-llama")
    register()
    config = HeadMapConfig(variant="mha", heads={0: [1], 2: [0, 3]}, r=2, base_model=base_info(plain, "tiny-llama"))
    pm = get_peft_model(tiny_model("tiny-llama")[0], config)
    pm.save_pretrained(tmp_path / "adapter")
    names = check_every_boundary(lambda root: merge(tmp_path / "adapter", root / "merged"), tmp_path / "m",
                                 monkeypatch, finished="already exists and is not empty; merge writes a new")
    assert names == ["directory filled, not renamed: merged", "directory renamed: merged"]
    names = check_every_boundary(lambda root: export(tmp_path / "adapter", root / "exp", lora=True),
                                 tmp_path / "e", monkeypatch, finished="already exists and is not empty; export")
    assert names[-2:] == ["directory filled, not renamed: exp", "directory renamed: exp"]


@pytest.mark.parametrize("failing", ["cut answers", "disk offload"])
def test_a_run_that_cannot_start_leaves_nothing_that_refuses_its_correction(tmp_path, failing):
    """What fails after the model loads but before the first step (every answer cut by --max-len under
    --loss-on answer; a trained block offloaded to disk) fails before the run's first file, so the corrected
    command runs instead of being refused as "made with other settings"."""
    from circuitlab.core.errors import CircuitlabError
    from circuitlab.finetune import finetune
    from circuitlab.models.plain import load_plain
    from tests.finetune.common import cfg, tiny_circuit

    circuit = tiny_circuit(load_plain("tiny-llama"), tmp_path, heads={0: [1], 2: [0, 3]})
    good = cfg(circuit=circuit, epochs=1, max_train=2, batch_size=2, eval_limit=2, loss_on="answer")
    out = tmp_path / "run"
    if failing == "cut answers":
        with pytest.raises(CircuitlabError, match="max_len 2 leaves no answer token"):
            finetune(load_plain("tiny-llama"), cfg(**{**good.to_dict(), "max_len": 2}), out, progress=False)
    else:
        on_disk = load_plain("tiny-llama", None, device_map="sequential", max_memory="cpu=13MB")
        with pytest.raises(CircuitlabError, match=r"offloads model\.layers\.2 to disk"):
            finetune(on_disk, good, out, progress=False)
    assert not out.exists() or list(out.iterdir()) == []  # at most the empty directory its lock was taken in
    if failing == "cut answers":
        assert finetune(load_plain("tiny-llama"), good, out, progress=False).train.steps == 1


def test_a_refused_pickle_in_a_checkpoint_is_one_line(tmp_path):
    """Trainer reads a checkpoint's optimizer state with weights_only=True: a file holding more than tensors is
    refused (nothing runs), and said in one line naming the checkpoint and what to do."""
    from pathlib import PurePosixPath

    from circuitlab.core.errors import CircuitlabError
    from circuitlab.finetune import finetune
    from circuitlab.models.plain import load_plain
    from tests.finetune.common import cfg, tiny_circuit

    class Stop(Exception):
        pass

    def stop(step):
        if step == 3:
            raise Stop

    config = cfg(circuit=tiny_circuit(load_plain("tiny-llama"), tmp_path), epochs=2, max_train=4, batch_size=2,
                 eval_limit=2)
    out = tmp_path / "run"
    with pytest.raises(Stop):
        finetune(load_plain("tiny-llama"), config, out, progress=False, on_step=stop)
    torch.save({"state": PurePosixPath("not a tensor")}, out / "checkpoint" / "checkpoint-2" / "optimizer.pt")
    with pytest.raises(CircuitlabError, match=r"checkpoint .*checkpoint-2: refused to unpickle one of its files .*"
                                              r"delete it to resume from the one before"):
        finetune(load_plain("tiny-llama"), config, out, progress=False)


FIGURES = (".html", ".js", ".png", ".csv", ".md")  # redrawn whole by every run (and an HTML figure's element ids
# are random): crashes while they are written are tried too, but their bytes are not compared


def check_every_study_boundary(job, tmp_path, monkeypatch) -> list[str]:
    """`check_every_boundary` for the studies that draw figures: a crash at every boundary (the figures', tables'
    and README's writes too), the results' JSON and safetensors compared, and nothing left of the crashed write."""
    names = boundaries_of(job, tmp_path / "straight", monkeypatch)
    keep = lambda files: {k: v for k, v in files.items() if not k.endswith(FIGURES)}  # noqa: E731
    expected = keep(snapshot(tmp_path / "straight"))
    drawn = sorted(p.relative_to(tmp_path / "straight") for p in (tmp_path / "straight").rglob("*"))
    for k, name in enumerate(names, 1):
        root = tmp_path / f"crash{k}"
        assert crash_then_rerun(job, root, k, monkeypatch) == name
        got = keep(snapshot(root))
        assert sorted(got) == sorted(expected), f"crash at {name!r}"
        for rel in expected:
            assert got[rel] == expected[rel], f"crash at {name!r}: {rel} differs"
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == drawn, f"crash at {name!r}"  # no leftover
    return names


def test_track(tmp_path, monkeypatch):
    from circuitlab.edges.config import EdgesConfig
    from circuitlab.finetune import RunOptions, finetune
    from circuitlab.models.plain import load_plain
    from circuitlab.studies.jobs import track
    from tests.finetune.common import cfg

    run = tmp_path / "run"
    finetune(load_plain("tiny-llama"), cfg(method="lora", max_train=2, batch_size=2, epochs=1, eval_limit=2),
             run, progress=False, options=RunOptions(save_every=1))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"clean": f"{a} + {b} =", "corrupted": f"{a} - {b} =", "answer": f" {a + b}"})
                             + "\n" for a, b in ((12, 5), (31, 40))))
    config = EdgesConfig(method="eap", batch_size=2, top_n=12)
    names = check_every_study_boundary(
        lambda root: track(run, root / "t", pairs_file=pairs, config=config, png=False, progress=False,
                           log=lambda s: None), tmp_path / "track", monkeypatch)
    assert "file renamed: state.json" in names and "file renamed: track.json" in names
    assert any(n.endswith(".html") for n in names)


def test_reproduce(tmp_path, monkeypatch, data_dir):
    from circuitlab.models import load_model
    from circuitlab.studies.config import ReproduceConfig
    from circuitlab.studies.jobs import reproduce

    model = load_model("tiny-llama")
    config = ReproduceConfig(samples=3, heads_per_layer=1, max_docs=16, all_docs=4, random_seeds=(0, 1))

    def job(root):  # a cache of its own (the docs' scores): every run writes it, and a crash while it does is tried
        monkeypatch.setenv("CIRCUITLAB_CACHE", str(root / "cache"))
        reproduce(model, ["capitals"], data_dir, root / "r", config, png=False, progress=False, log=lambda s: None)

    names = check_every_study_boundary(job, tmp_path, monkeypatch)
    assert "result written, partial state not removed: capitals.json" in names
    assert any(n.startswith("file renamed: capitals-") and n.endswith(".v2.json") for n in names)  # the cache
    assert "file renamed: README.md" in names and any(n.endswith(".html") for n in names)
