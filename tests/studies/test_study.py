"""A study run end to end on the tiny model: in this process, and on a real local Ray cluster (127.0.0.1) with a
worker killed mid-job; both give the same files and the same page, and nothing runs twice."""

import json
import shutil
from pathlib import Path

import pytest

from circuitlab.core.errors import CircuitlabError
from circuitlab.studies import study
from circuitlab.studies.engine import KILL
from tests.helpers import without_durations

TINY = Path(__file__).with_name("tiny.toml")

def results(root: Path) -> dict:
    """Every JSON result of the study, by its path, without the wall-clock times it records."""
    return {p.relative_to(root).as_posix(): without_durations(json.loads(p.read_text()))
            for p in sorted((root / "runs").rglob("*.json"))}


def study_dir(tmp_path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(TINY, d / "tiny.toml")
    return d


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The study run in this process, registered first, then analysed."""
    root = study_dir(tmp_path_factory.mktemp("study"), "local")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    study.register("tiny.toml", today="2026-12-06")
    lines = []
    study.run("tiny.toml", threads=1, log=lines.append)
    study.analyze("tiny.toml", png=False, today="2026-12-06", log=lambda line: None)
    mp.undo()
    return root, lines


def test_the_grid_runs_each_job_once_and_resumes_to_nothing(in_process, monkeypatch):
    root, lines = in_process
    assert len(lines) == 10  # 1 base evaluation, 2 circuits, 2 tuning runs, 2 circuit runs, 3 random sets
    monkeypatch.chdir(root)
    again = []
    p = study.run("tiny.toml", threads=1, log=again.append)
    assert again == [] and not p.left()  # every job found finished: none runs twice
    page = (root / "page.md").read_text()
    assert "Registered on 2026-12-06" in page and "Deviations from the registration: none." in page
    assert "| capitals | circuit − random | 2 : 3 |" in page
    a, b = (set(map(tuple, json.loads((root / f"kept/circuits/capitals-c0{i}.json").read_text())["head_list"]))
            for i in (0, 1))
    n_heads = json.loads((root / "kept/circuits/capitals-c00.json").read_text())["model"]["n_heads"]
    chance = sum(sum(1 for x in a if x[0] == layer) * sum(1 for y in b if y[0] == layer)
                 for layer in {x[0] for x in a}) / n_heads
    assert (f"| capitals | 2 | {len(a):.1f} | {len(a & b):.1f} ({len(a & b)}–{len(a & b)}) | {chance:.1f} | "
            f"{len(a & b)} | {len(a | b)} |") in page


def test_time_left_and_spent_from_the_times_the_finished_jobs_record(in_process, tmp_path, monkeypatch):
    """Each job's recorded time set by hand: a tuning run and an arm's run are both HeadMap runs but score different
    rows, so each phase (and each arm) is costed by its own median; a run that records no time counts in neither."""
    local, _ = in_process
    root = tmp_path / "costed"
    shutil.copytree(local, root, ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(root)
    kept = root / "kept"

    def record(path: Path, **fields):
        doc = json.loads(path.read_text())
        for key, value in fields.items():
            if value is None:
                doc[key].pop("seconds")
            elif key in ("train", "eval"):
                doc[key]["seconds"] = value
            else:
                doc[key] = value
        path.write_text(json.dumps(doc))

    record(kept / "base/capitals.json", seconds=60)
    for c in (kept / "circuits").glob("*.json"):
        record(c, timings={"locate_s": 2900, "select_samples_s": 100})
    for run in (kept / "capitals/lr").glob("*/result.json"):
        record(run, train=100, eval=20)  # 2 min each
    for name, train in (("circuit-h00-s0", 240), ("circuit-h01-s1", 240), ("random-h00-s0", 300)):
        record(kept / f"capitals/{name}/result.json", train=train, eval=60)  # 5, 5 and 6 min
    record(kept / "capitals/random-h01-s1/result.json", train=None, eval=None)  # no time recorded
    shutil.rmtree(kept / "capitals/random-h02-s0")  # left to run
    p = study.plan("tiny.toml")
    assert p.minutes[("prepare", "headmap")] == 2 and p.minutes[("prepare", "locate")] == 50
    assert p.minutes[("arms", "headmap")] == 5 and p.minutes[("arms", "headmap", "capitals", "random")] == 6
    assert p.hours_left() == pytest.approx(6 / 60)  # the random set left, at the random arm's median
    summary = p.summary()
    assert "  arms     headmap   4 done, 0 started, 1 left; 5.0 min a job" in summary
    # 60 s + 2 x 3,000 s + 2 x 120 s + 2 x 300 s + 360 s = 7,260 s
    assert "  9 jobs done in 2.0 hours of job time (1 record no time)" in summary
    for arm in kept.glob("capitals/[cr]*-h*"):  # no arm finished: the spec's declared cost, not the tuning runs'
        shutil.rmtree(arm)
    p = study.plan("tiny.toml")
    assert p.minutes[("arms", "headmap")] == 0.1 and p.minutes[("prepare", "headmap")] == 2


def test_ray_cluster_gives_the_same_files_and_a_killed_worker_resumes(in_process, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    local, _ = in_process
    root = study_dir(tmp_path, "ray")
    shutil.copy(local / "tiny.registration.json", root)  # registered as the local one was
    monkeypatch.chdir(root)
    victim = "runs/capitals/circuit-h01-s1"
    monkeypatch.setenv(KILL, f"{victim}:1:{tmp_path / 'killed'}")  # its worker dies after its first step
    first = []
    with pytest.raises(CircuitlabError, match=r"1 job\(s\) failed, first runs/capitals/circuit-h01-s1 .*run the same"):
        study.run("tiny.toml", engine="ray", cpus=2, threads=1, log=first.append)
    assert (tmp_path / "killed").exists() and not (root / victim / "result.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("result.json")}
    assert len(finished) == 6  # the prepare phase (2 tuning runs) and 4 of the 5 arm runs
    second = []
    study.run("tiny.toml", engine="ray", cpus=2, threads=1, log=second.append)
    assert [line.split("]")[1].split(":")[0].strip() for line in second] == [victim]  # only the killed job ran
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # nothing finished was written again
    assert not ray.is_initialized()
    study.analyze("tiny.toml", png=False, today="2026-12-06", log=lambda line: None)
    assert results(root) == results(local)
    assert (root / "page.md").read_text() == (local / "page.md").read_text()


def test_kept_results_stand_for_the_runs_on_a_fresh_machine(in_process, tmp_path, monkeypatch):
    """With the scratch runs gone, the kept results are the study: nothing reruns, the page is the same."""
    local, _ = in_process
    root = tmp_path / "fresh"
    shutil.copytree(local, root, ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(root)
    p = study.plan("tiny.toml")
    assert not p.left() and sorted(root.iterdir()) == sorted(root / n for n in (
        "kept", "page.md", "tiny.looks.json", "tiny.registration.json", "tiny.toml"))
    study.analyze("tiny.toml", png=False, today="2026-12-06", log=lambda line: None)
    assert (root / "page.md").read_text() == (local / "page.md").read_text()


def test_analyze_reports_every_deviation_from_the_registration(in_process, tmp_path, monkeypatch):
    local, _ = in_process
    root = tmp_path / "copy"
    shutil.copytree(local, root, ignore=shutil.ignore_patterns("runs"))  # a fresh machine: the kept results only
    monkeypatch.chdir(root)
    spec = root / "tiny.toml"  # after the first look, a redundant arm (drawn around circuit 0, restored from kept)
    spec.write_text(spec.read_text() + '\n[[arms]]\nname = "redundant"\nheads = "redundant"\nsets = 1\n')
    lines = []
    study.run("tiny.toml", threads=1, log=lines.append)
    assert len(lines) == 1 and "runs/capitals/redundant-h00-s0" in lines[0]
    assert (root / "runs/circuits/capitals-c00.json").read_bytes() == (root / "kept/circuits/capitals-c00.json").read_bytes()
    study.analyze("tiny.toml", png=False, today="2026-12-07", log=lambda line: None)
    page = (root / "page.md").read_text()
    assert 'the spec changed since its registration on 2026-12-06: +[[arms]]; +name = "redundant"' in page
    assert "a later look: the first analysis (2026-12-06) saw 10 runs, this one sees 11" in page
    assert "| capitals | redundant | 1 | 1 |" in page
    with pytest.raises(CircuitlabError, match="registers another version of this spec"):
        study.register("tiny.toml")


def test_a_task_behind_an_admission_rule_runs_its_arms_only_once_admitted(in_process, tmp_path, monkeypatch):
    """`admit_above_base`: the tuning runs at the chosen rate (the pilot) against the base model plus N points."""
    local, _ = in_process
    root = tmp_path / "gated"
    shutil.copytree(local, root, ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(root)
    for kept in (root / "kept").rglob("*-h0*"):  # no arm has run yet
        shutil.rmtree(kept)
    spec = root / "tiny.toml"
    for points, admitted in ((50, False), (-50, True)):
        spec.write_text(TINY.read_text().replace('tasks = ["capitals"]', f"[tasks.capitals]\nadmit_above_base = {points}"))
        p = study.plan("tiny.toml")
        rate = p.lr_table["capitals"][0]
        tuning = [json.loads(Path(j.found).read_text())["eval"]["metrics"]["acc"] for j in p.grid.jobs
                  if j.lr_tuning and j.settings["lr"] == rate]
        base = json.loads((root / "kept/base/capitals.json").read_text())["metrics"]["acc"]
        assert p.admission["capitals"] == (admitted, pytest.approx(sum(tuning) / len(tuning)), pytest.approx(base))
        arms = [j for j in p.grid.jobs if j.phase == "arms"]
        assert len(arms) == 5 and all(p.runnable(j) == admitted for j in arms)
    lines = []
    spec.write_text(TINY.read_text().replace('tasks = ["capitals"]', "[tasks.capitals]\nadmit_above_base = 50"))
    study.run("tiny.toml", threads=1, log=lines.append)
    assert lines == []  # not admitted: no arm runs
    p = study.plan("tiny.toml")  # ... and none is owed: the registration's rule turned them away
    assert not p.left() and p.progress() == {} and p.summary()[-1] == "  0 jobs left: about 0.0 hours of one job slot"
    assert len(p.declared()) == len(p.grid.jobs) - 5


def test_a_page_with_registered_runs_missing_says_it_is_provisional(in_process, tmp_path, monkeypatch):
    local, _ = in_process
    assert "Provisional" not in (local / "page.md").read_text()
    root = tmp_path / "cut"
    shutil.copytree(local, root, ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(root)
    shutil.rmtree(root / "kept/capitals/random-h02-s0")  # one random set's run not done yet
    assert study.plan("tiny.toml").progress() == {"capitals": (4, 5)}
    study.analyze("tiny.toml", png=False, today="2026-12-07", log=lambda line: None)
    page = (root / "page.md").read_text()
    assert "**Provisional: not every declared run is done** (capitals: 4 of 5 arm runs)" in page
    assert "1 of 10 declared runs are missing: runs/capitals/random-h02-s0" in page


def test_a_track_runs_after_its_pilot_and_before_the_arms_that_need_it(tmp_path, monkeypatch, data_dir):
    """CircuitLoRA's recipe as a study: a LoRA run keeping every step, its track, then CircuitLoRA on its circuits;
    the track's circuits are kept with the results, so a fresh machine finds the whole grid done. The study's data
    directory goes to the jobs that read a task's docs, not to the track, whose pairs file is taken as it is."""
    from tests.studies.test_track import PAIRS

    root = tmp_path / "edges"
    root.mkdir()
    shutil.copy(TINY.with_name("tiny_edges.toml"), root / "spec.toml")
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    monkeypatch.chdir(root)
    lines = []
    study.run("spec.toml", data_dir, threads=1, log=lines.append)
    ran = [line.split("]")[1].split(":")[0].strip() for line in lines]
    track = "runs/capitals/lora-h00-s0/track"
    assert ran.index(track) > ran.index("runs/capitals/lora-h00-s0")
    assert all(ran.index(f"runs/capitals/circuit-lora-h0{i}-s{i}") > ran.index(track) for i in (0, 1))
    kept = sorted(p.name for p in (root / "kept/capitals/lora-h00-s0/track").iterdir())
    assert kept == [f"step-{i}.{ext}" for i in range(3) for ext in ("json", "safetensors")] + ["track.json"]
    shutil.rmtree(root / "runs")
    assert not study.plan("spec.toml").left()
