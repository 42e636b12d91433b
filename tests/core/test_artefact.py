"""Artefact: reuse, resume, refuse; the partial state committed in one step; a crash at every write boundary
repaired by the rerun; one writer per output across real processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuitlab.core import io
from circuitlab.core.artefact import STATE, TENSORS, Artefact
from circuitlab.core.errors import CircuitlabError
from tests.core.sum_job import N_STEPS, run, step_tensor
from tests.helpers import crash_hook

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = sum(step_tensor(i) for i in range(N_STEPS)).tolist()  # computed here, not by the job


def crash_at(monkeypatch, k: int) -> list[str]:
    """Make the k-th write boundary (1-based) crash; returns the boundaries passed, the crashing one last."""
    seen = []
    monkeypatch.setattr(io, "fault_hook", crash_hook(k, seen))
    return seen


def boundaries(monkeypatch, job) -> list[str]:
    seen = crash_at(monkeypatch, 0)
    job()
    monkeypatch.setattr(io, "fault_hook", None)
    return seen


def test_reuse_resume_and_refuse(tmp_path):
    out = tmp_path / "r.json"
    assert run(out, {"a": 1})["total"] == EXPECTED and not (tmp_path / "r.json.partial").exists()
    assert run(out, {"a": 1}) == {"made_from": {"a": 1}, "total": EXPECTED, "reused": True}
    with pytest.raises(CircuitlabError, match=r"r.json holds a sum made with other settings \(differs in: a\)"):
        run(out, {"a": 2})
    # an unfinished run of other settings is refused too, and named with what to do
    half = Artefact(tmp_path / "h.json", {"a": 1}, "sum")
    half.save_state({"done": 1}, {"total": step_tensor(0)})
    half.release()
    with pytest.raises(CircuitlabError, match=r"h.json.partial holds an unfinished sum with other settings "
                                              r"\(differs in: a\); rerun with those settings.*or delete"):
        run(tmp_path / "h.json", {"a": 2})
    assert run(tmp_path / "h.json", {"a": 1})["total"] == EXPECTED


def test_the_partial_state_is_one_commit_naming_its_tensors(tmp_path):
    a = Artefact(tmp_path / "r.json", {"a": 1}, "sum")
    for i in range(2):
        a.save_state({"done": i + 1}, {"total": step_tensor(i) * (i + 1)})
    files = sorted(p.name for p in a.partial.iterdir())
    state = json.loads((a.partial / STATE).read_text())
    assert files == sorted([STATE, state["tensors"]])  # the step before's tensors are gone
    assert state["state"] == {"done": 2}
    resumed_state, tensors = Artefact(tmp_path / "r.json", {"a": 1}, "sum").resume()
    assert resumed_state == {"done": 2} and torch.equal(tensors["total"], step_tensor(1) * 2)
    a.release()


def test_a_partial_state_of_the_earlier_layout_resumes(tmp_path):
    from safetensors.torch import save_file

    partial = tmp_path / "r.json.partial"
    partial.mkdir()
    save_file({"total": step_tensor(0)}, str(partial / TENSORS))
    (partial / STATE).write_text(json.dumps({"made_from": {"a": 1}, "state": {"done": 1}}))
    assert run(tmp_path / "r.json", {"a": 1})["total"] == EXPECTED


def test_damaged_tensors_are_refused_in_one_line(tmp_path, monkeypatch):
    a = Artefact(tmp_path / "r.json", {"a": 1}, "sum")
    a.save_state({"done": 1}, {"total": step_tensor(0)})
    a.release()
    named = a.partial / json.loads((a.partial / STATE).read_text())["tensors"]
    named.write_bytes(named.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CircuitlabError, match="is missing or damaged.*delete .*r.json.partial to start over"):
        run(tmp_path / "r.json", {"a": 1})


def test_a_crash_at_every_write_boundary_is_repaired_by_the_rerun(tmp_path, monkeypatch):
    """Killed between the tensors and state.json (the bug this replaces counted that step twice), between the
    result and the removal of the partial state, and everywhere else: the rerun's result is the sum computed
    independently, and nothing is left beside it."""
    names = boundaries(monkeypatch, lambda: run(tmp_path / "ref.json", {"a": 1}))
    # per step: tensors written, renamed, state.json written, renamed, the step before's tensors removed; then the
    # result written, renamed, and the partial state removed
    assert len(names) == 4 * N_STEPS + (N_STEPS - 1) + 3
    assert names[:4] == ["file written, not renamed: tensors-" + names[0].split("tensors-")[1],
                         "file renamed: " + names[1].split(": ")[1], "file written, not renamed: state.json",
                         "file renamed: state.json"]
    assert names[-1] == "result written, partial state not removed: r.json".replace("r.json", "ref.json")
    for k in range(1, len(names) + 1):
        out = tmp_path / f"k{k}" / "r.json"
        crash_at(monkeypatch, k)
        with pytest.raises(io.Crash):
            run(out, {"a": 1})
        monkeypatch.setattr(io, "fault_hook", None)
        assert run(out, {"a": 1})["total"] == EXPECTED, names[k - 1]
        assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"], names[k - 1]


def test_leftovers_of_interrupted_writes_are_removed_and_a_moved_aside_directory_restored(tmp_path, monkeypatch):
    target = tmp_path / "model"
    io.write_dir_atomic(target, lambda d: (d / "w").write_text("old"))
    seen = crash_at(monkeypatch, 2)  # old moved aside, new not yet renamed: no `model` at all
    with pytest.raises(io.Crash):
        io.write_dir_atomic(target, lambda d: (d / "w").write_text("new"))
    assert seen[-1] == "old directory moved aside: model" and not target.exists()
    monkeypatch.setattr(io, "fault_hook", None)
    with io.output_lock(target):
        assert (target / "w").read_text() == "old"  # the last complete directory, back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp directory, no lock file


def test_fault_exit_is_a_real_kill_and_the_rerun_repairs_it(tmp_path):
    """$CIRCUITLAB_FAULT=exit:N in a real process (os._exit: no cleanup, nothing flushed) at the boundary between
    the second step's tensors and its state.json."""
    out = tmp_path / "r.json"
    env = {**os.environ, io.FAULT_ENV: "exit:6"}
    killed = subprocess.run([sys.executable, "-m", "tests.core.sum_job", str(out), '{"a": 1}'], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert killed.returncode == io.FAULT_EXIT
    state = json.loads((tmp_path / "r.json.partial" / STATE).read_text())
    assert state["state"] == {"done": 1} and len(list((tmp_path / "r.json.partial").glob("tensors-*"))) == 2
    again = subprocess.run([sys.executable, "-m", "tests.core.sum_job", str(out), '{"a": 1}'], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "made " + json.dumps(EXPECTED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def start(out, identity, env=None):
    return subprocess.Popen([sys.executable, "-m", "tests.core.sum_job", str(out), json.dumps(identity)], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("second", [{"a": 1}, {"a": 2}], ids=["same settings", "other settings"])
def test_one_writer_per_output(tmp_path, second):
    """Two real processes on one output. The first is paused (holding the lock) after its first partial state;
    the second says in one line that it waits. Then the first finishes; the second reuses its result (the work
    is done once) or, made with other settings, refuses it in one line. No sleeps: each side waits for a line."""
    out = tmp_path / "r.json"
    first = start(out, {"a": 1}, {io.FAULT_ENV: "pause:4"})  # at state.json's rename of step 1
    assert first.stderr.readline().startswith("paused at file renamed: state.json")
    other = start(out, second)
    assert other.stderr.readline() == f"circuitlab: {out} is being written by another process; waiting for it\n"
    first.stdin.close()
    assert first.wait() == 0 and first.stdout.read().strip() == "made " + json.dumps(EXPECTED)
    code, stdout, stderr = other.wait(), other.stdout.read(), other.stderr.read()
    if second == {"a": 1}:
        assert code == 0 and stdout.strip() == "reused " + json.dumps(EXPECTED) and stderr == ""
    else:
        assert code == 2 and stderr.count("\n") == 1 and "made with other settings (differs in: a)" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    for p in (first, other):
        p.stdout.close()
        p.stderr.close()
        if p.stdin and not p.stdin.closed:
            p.stdin.close()
