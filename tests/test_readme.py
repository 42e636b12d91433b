"""The README's examples, run as written, so they cannot drift from the code: the command-line tour as a bash script,
then the Python block in the same directory (its steps have the tour's settings, so each reuses the tour's result:
the files stay byte for byte as the tour wrote them), and the `reproduce` line is the one the committed figures
record.

The environment switch `CIRCUITLAB_DOCS_MODEL` says which model the examples run on: the README's model name is
replaced by it (default `tiny-llama`, the seeded random model, so `make test` runs them in a few minutes;
`smollm2-135m` runs the README exactly as it is, which the `smollm2`-marked case does).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SWITCH = "CIRCUITLAB_DOCS_MODEL"
MODEL = "smollm2-135m"  # the model the README names


def block(text: str, heading: str, lang: str) -> str:
    """The first ```lang block after the heading."""
    section = text.split(f"\n## {heading}\n", 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, flags=re.S).group(1)


def on(text: str, model: str, data_dir: Path) -> str:
    """The example as run here: on `model`, with the task files of this checkout."""
    return text.replace(MODEL, model).replace("../shared/data", str(data_dir))


def environment(data_dir: Path) -> dict:
    bin_dir = str(Path(sys.executable).parent)  # `circuitlab` and `python` of this interpreter
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "CIRCUITLAB_DATA": str(data_dir)}


MADE = ["r.json", "circuits/sst2.json", "circuits/capitals.json", "figs/fig5_layer_conditioned_losses.html",
        "cmp/head_frequency.html", "runs/sst2/result.json", "adapter/adapter_config.json", "adapter/lora/README.md",
        "merged/config.json", "smollm2/config.json", "lm_eval_tasks/circuitlab_sst2.yaml", "edges/add_sub.json"]
REUSED = ["r.json", "circuits/sst2.json", "circuits/capitals.json", "runs/sst2/result.json", "edges/add_sub.json"]


@pytest.mark.parametrize("model", [os.environ.get(SWITCH, "tiny-llama"), pytest.param(MODEL, marks=[
    pytest.mark.smollm2, pytest.mark.skipif(not os.environ.get("CIRCUITLAB_README_SMOLLM2"),
                                            reason="the smollm2 tour is opt-in: CIRCUITLAB_README_SMOLLM2=1")])])
def test_the_readme_tours_run_as_written(model, data_dir, tmp_path):
    readme = README.read_text()
    env = environment(data_dir)
    tour = on(block(readme, "A tour of the command line", "bash"), model, data_dir)
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + tour], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    missing = [p for p in MADE if not (tmp_path / p).is_file()]
    assert not missing, missing
    assert "circuitlab_sst2" in done.stdout and "acc" in done.stdout  # lm_eval's table

    before = {p: (tmp_path / p).read_bytes() for p in REUSED}
    python = on(block(readme, "A tour of the Python API", "python"), model, data_dir)
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    changed = [p for p in REUSED if (tmp_path / p).read_bytes() != before[p]]
    assert not changed, f"the Python block's settings differ from the tour's: it made {changed} again"


def test_the_readmes_reproduce_line_is_the_one_that_made_the_committed_figures():
    readme = README.read_text()
    line = next(l for l in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) if "circuitlab reproduce" in l).strip()
    figures = (REPO / "figures" / "smollm2-135m" / "README.md").read_text()
    recorded = re.search(r"```\n(circuitlab reproduce .*?)\n```", figures, flags=re.S).group(1).strip()
    assert line == recorded


def documented_commands() -> list[tuple[str, str]]:
    """(file, command line) of every `circuitlab ...` line in a shell block of README.md and docs/*.md (`python -m`,
    torchrun's and accelerate's `-m circuitlab` too), continuation lines joined and comments dropped; a line with
    `...` is a sketch of a command, and `lm-eval` hands its options to lm_eval's own parser."""
    found = []
    for path in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for lang, body in re.findall(r"```(\w*)\n(.*?)```", path.read_text(), flags=re.S):
            if lang not in ("", "bash", "sh", "console"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                m = re.match(r"^\s*(?:python -m |torchrun .*?-m |accelerate launch .*?-m )?circuitlab (.*)$", line)
                if m and "..." not in line and not m.group(1).startswith("lm-eval "):
                    found.append((path.name, re.sub(r"\s+#.*$", "", m.group(1))))
    return found


def test_every_documented_command_parses():
    """Its command, options and choices exist as written (the values are the reader's: DIR, RUN, ...)."""
    import shlex

    from circuitlab.cli import build_parser
    from circuitlab.core.errors import CircuitlabError

    commands = documented_commands()
    assert len(commands) > 40
    wrong = []
    for name, command in commands:
        try:
            build_parser().parse_args(shlex.split(command))
        except CircuitlabError as e:
            wrong.append(f"{name}: circuitlab {command}: {e}")
    assert not wrong, "\n".join(wrong)


def test_every_documented_python_block_compiles_and_names_what_exists():
    """Each ```python block of README.md and docs/*.md is valid Python, and every circuitlab name it imports (or
    uses as `cl.NAME`) exists, so a renamed function cannot leave the docs behind."""
    import ast
    import importlib.util

    import circuitlab

    missing, blocks = [], 0
    for path in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for body in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S):
            blocks += 1
            for node in ast.walk(ast.parse(body, filename=path.name)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("circuitlab"):
                    module = importlib.import_module(node.module)
                    missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                                if not hasattr(module, a.name)
                                and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cl":
                    missing += [f"{path.name}: cl.{node.attr}"] if not hasattr(circuitlab, node.attr) else []
    assert blocks >= 3 and not missing, missing
