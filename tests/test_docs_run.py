"""Every code block of docs/*.md, run as written, so the pages cannot drift from the code (README.md's blocks are
tests/test_readme.py's).

Each page runs in a directory of its own, its blocks in order: a ```bash block's lines with bash (`set -euo
pipefail`), a ```python block as a file with `python`, a ```toml block saved where its page says (SAVED). The
model switch is the README test's (`CIRCUITLAB_DOCS_MODEL`, default `tiny-llama`: the pages' `smollm2-135m` is
replaced by it, `../shared/data` by this checkout's data), and on a model of another depth, what names
smollm2-135m's layers (curve points, CircuitLoRA's critical layers) names its layers (DEPTH). `circuitlab`,
`python FILE` and `lm_eval` start warm (tests/docs_forkserver.py: forked from one process that has imported
torch), and two pages run at a time, so the pages take a minute or two.

What a page takes the reader to have (a circuit C.json, a run directory, a spec: its placeholders) is made first,
by circuitlab itself, in GIVEN. A block that cannot run here is marked in the page, never in this file:

    # sketch: WHY        as a block's first line: the block is not run (a GPU, a 7B model, ...)
    COMMAND  # sketch: WHY   at the end of a line: that command (with its continuation lines) is not run

so every mark is in front of the reader, and says why.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_readme import MODEL, SWITCH, environment, on

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SKETCH = re.compile(r"#\s*sketch:\s*\S")
RUN = ("bash", "python")  # the languages a block is run in; ```toml is saved (SAVED), the rest is text
SAVED = {"studies.md": "tiny.toml"}  # "Save it as `tiny.toml`"

# What each page assumes is there, each page run in ../PAGE: finetuning.md's CircuitLoRA takes the LoRA run
# edges.md tracked, so CHAIN's pages run in that order, beside the other pages.
CHAIN = ["edges.md", "finetuning.md"]
GIVEN = {
    "finetuning.md": """
circuitlab locate --model smollm2-135m --task sst2 --samples 16 --max-docs 64 --out C.json   # a circuit
mkdir -p runs/add_sub-lora && cp -r ../edges.md/runs/add_sub-lora/track runs/add_sub-lora/  # CircuitLoRA's pilot
for s in 0 1; do                                          # stats: two methods' runs, by seed
  circuitlab finetune --model smollm2-135m --task sst2 --method headmap-mha --circuit C.json --max-train 16 \
      --epochs 1 --limit 16 --seed $s --out runs/sst2/headmap-circuit-s$s
  circuitlab finetune --model smollm2-135m --task sst2 --method lora --max-train 16 --epochs 1 --limit 16 \
      --seed $s --out runs/sst2/lora-s$s
done
""",
    "interchange.md": """
circuitlab locate --model smollm2-135m --task capitals --samples 8 --out located.json
circuitlab official-export located.json --out info.pt     # info.pt as the official code writes it
circuitlab export-model smollm2-135m --out MODEL          # lm_eval's pretrained=MODEL
circuitlab edges --model smollm2-135m --task add_sub --max-pairs 8 --out edges/add_sub.json   # an edge circuit
circuitlab edges-convert edges/add_sub.json --to mib --out library.mib.json
python -c 'import json; d = json.load(open("library.mib.json")); del d["circuitlab"]  # names no model
json.dump(d, open("foreign.mib.json", "w"))'
circuitlab finetune --model smollm2-135m --task capitals --method headmap-mha --circuit located.json --max-train 8 \
    --epochs 1 --limit 8 --out runs/NAME                  # a HeadMap run
""",
    "locating.md": """
printf '%s\\n' '{"prompt": "The capital of France is", "target": " Paris"}' \
    '{"prompt": "The capital of Japan is", "target": " Tokyo"}' > S.jsonl
circuitlab reproduce --model smollm2-135m --tasks capitals --samples 4 --no-png \
    --out figures/smollm2-135m                            # held-out: reproduce's circuits
""",
    "studies.md": "cp tiny.toml SPEC\n",  # the page's spec (saved from its toml block before the first block runs)
}
DEPTH = {"--points 14,29": "--points 1,3",  # smollm2-135m's layers 14 and 29 of 30; tiny-llama has 4
         "--critical-layers 5": "--critical-layers 2"}


def fenced(page: Path) -> list[tuple[str, int, str]]:
    """(language, line of the opening fence, body) of every fenced block."""
    text = page.read_text()
    return [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


def sketched(body: str) -> bool:
    return bool(SKETCH.match(body.lstrip()))


def runnable_lines(body: str) -> str:
    """A shell block without its sketched commands (a command's continuation lines go with it)."""
    kept, command = [], []
    for line in body.splitlines():
        command.append(line)
        if not line.endswith("\\"):
            kept += [] if SKETCH.search(command[-1]) else command
            command = []
    return "\n".join(kept + command) + "\n"


def as_run(text: str, model: str, data_dir: Path) -> str:
    text = on(text, model, data_dir)
    for written, here in (DEPTH.items() if model != MODEL else ()):
        text = text.replace(written, here)
    return text


@pytest.fixture(scope="module")
def warm(tmp_path_factory, data_dir):
    """The environment the pages run in: the README test's, with the warm `circuitlab` first on PATH."""
    from tests.docs_forkserver import shims

    root = tmp_path_factory.mktemp("docs")
    shims(root / "bin")
    env = environment(data_dir)
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env['PATH']}", CIRCUITLAB_FORKSERVER=str(root / "server.sock"))
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "docs_forkserver.py"),
                               env["CIRCUITLAB_FORKSERVER"]], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        yield root, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a command of a page still running: its page has failed already
            server.kill()


def run_page(page: Path, root: Path, env: dict, model: str, data_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """The page's blocks in order: (what ran, what is sketched, what failed: at most one, the page stops there)."""
    ran, sketches = [], []
    work = root / page.name
    work.mkdir()

    def bash(script: str, what: str) -> str | None:
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=work, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        print(f"{time.perf_counter() - start:6.1f}s  {what}")
        return None if done.returncode == 0 else f"{what}: exit {done.returncode}\n{done.stdout[-4000:]}"

    blocks = fenced(page)
    for lang, line, body in blocks:
        if lang == "toml" and page.name in SAVED:
            (work / SAVED[page.name]).write_text(body)
    if page.name in GIVEN and (failed := bash(as_run(GIVEN[page.name], model, data_dir), f"GIVEN[{page.name!r}]")):
        return ran, sketches, [failed]
    for lang, line, body in blocks:
        where = f"docs/{page.name}:{line} ({body.splitlines()[0][:60]})"
        if lang not in RUN:
            continue
        if sketched(body) or not runnable_lines(body).strip():
            sketches.append(where)
            continue
        if lang == "python":
            script = root / f"{page.stem}-{line}.py"
            script.write_text(as_run(body, model, data_dir))
            failed = bash(f"python {script}", where)
        else:
            sketches += [f"docs/{page.name}:{line + 1 + i} ({text[:60]})" for i, text in enumerate(body.splitlines())
                         if SKETCH.search(text)]
            failed = bash(as_run(runnable_lines(body), model, data_dir), where)
        if failed:
            return ran, sketches, [failed]
        ran.append(where)
    return ran, sketches, []


def test_every_docs_block_runs_as_written_or_is_marked_a_sketch(warm, data_dir):
    from concurrent.futures import ThreadPoolExecutor

    root, env = warm
    model = os.environ.get(SWITCH, "tiny-llama")
    lanes = [CHAIN, sorted(p.name for p in DOCS.glob("*.md") if p.name not in CHAIN)]

    def lane(pages: list[str]) -> list[tuple]:
        return [run_page(DOCS / page, root, env, model, data_dir) for page in pages]

    with ThreadPoolExecutor(len(lanes)) as pool:  # two at a time: most of a small model's work is one thread's
        done = [page for results in pool.map(lane, lanes) for page in results]
    ran, sketches, failed = ([x for page in done for x in page[i]] for i in range(3))
    print("ran:", *ran, "sketches:", *sketches, sep="\n  ")
    assert not failed, "\n\n".join(failed)
    assert len(ran) >= 14 and len(sketches) <= 8, (ran, sketches)


def test_a_block_is_bash_python_toml_or_text():
    """A block in another language would be neither run nor counted; a sketch mark names its reason."""
    for page in sorted(DOCS.glob("*.md")):
        for lang, line, body in fenced(page):
            assert lang in (*RUN, "toml", ""), f"docs/{page.name}:{line}: ```{lang}"
            assert lang != "toml" or page.name in SAVED, f"docs/{page.name}:{line}: where is it saved?"
            for text in body.splitlines():
                assert "sketch" not in text or re.search(r"#\s*sketch:\s*\w", text), f"docs/{page.name}:{line}: {text}"


def test_a_sketch_mark_leaves_out_only_what_it_marks():
    body = "a \\\n  b  # sketch: x\nc\nd \\\n  e\n"
    assert runnable_lines(body) == "c\nd \\\n  e\n"
    assert runnable_lines("a  # sketch: y\n") == "\n" and sketched("# sketch: GPUs\nx\n") and not sketched("x\n")
