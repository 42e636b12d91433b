"""The rules the package stands on, as tests instead of conventions (docs/development.md):

- every package under circuitlab/ is a layer of the import contract in pyproject.toml (a new package cannot escape it);
- every job module, and every job and config of `import circuitlab`, imports without torch, TransformerLens, PEFT or
  transformers (the light half that checks every input before anything heavy loads);
- the module map in docs/development.md lists every module, and only modules that exist;
- every command's run function is at most 20 lines and calls one library function (the CLI parses, builds configs,
  calls one job and prints).
"""

import ast
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "circuitlab"
HEAVY = ("torch", "transformer_lens", "peft", "transformers")


# -- the import contract -----------------------------------------------------------------------------------------


def contract_layers(pyproject: str) -> set[str]:
    contracts = tomllib.loads(pyproject)["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    return {name.strip() for layer in layers for name in layer.split("|")}


def packages(root: Path) -> set[str]:
    """circuitlab's subpackages, one level down: every directory holding Python files (a namespace package too)."""
    return {f"circuitlab.{d.name}" for d in root.iterdir() if d.is_dir() and any(d.glob("*.py"))}


def test_every_package_is_a_layer_of_the_import_contract():
    missing = packages(PACKAGE) - contract_layers((REPO / "pyproject.toml").read_text())
    assert not missing, f"add to [tool.importlinter] layers in pyproject.toml: {sorted(missing)}"


# -- job modules import light ------------------------------------------------------------------------------------


def job_modules() -> list[str]:
    return sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in PACKAGE.rglob("job*.py")
                  if p.stem in ("job", "jobs"))


def face_names() -> list[str]:
    """The jobs and configs `import circuitlab` offers; `load_model` and `EdgeCircuit` are the model and a tensor
    file, heavy by nature."""
    import circuitlab

    return sorted(set(circuitlab._names()) - {"load_model", "EdgeCircuit"})


def heavy_after(code: str) -> list[str]:
    check = (f"{code}\nimport sys\n"
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return eval(out.stdout.strip().splitlines()[-1])


def test_the_job_modules_are_found():
    assert {"circuitlab.locate.job", "circuitlab.edges.job", "circuitlab.evaluate.job", "circuitlab.finetune.job",
            "circuitlab.studies.jobs"} <= set(job_modules())


@pytest.mark.parametrize("module", job_modules())
def test_a_job_module_imports_without_torch(module):
    assert heavy_after(f"import {module}") == []


def test_the_jobs_and_configs_of_import_circuitlab_come_without_torch():
    names = face_names()
    assert {"locate_task", "evaluate_task", "edges_task", "TrainConfig"} <= set(names)
    assert heavy_after("import circuitlab\n" + "\n".join(f"circuitlab.{n}" for n in names)) == []


# -- the module map ----------------------------------------------------------------------------------------------


def mapped_modules(development_md: str) -> set[str]:
    """The modules docs/development.md's map names: the block that starts `circuitlab/`, a package per `name/` and
    its modules indented under it (`a, b` names two), a description after two spaces; lines deeper than a name's
    column continue the description above."""
    block = development_md.split("\ncircuitlab/\n", 1)[1].split("```", 1)[0]
    found, stack = set(), []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if not line.strip():
            continue
        if indent == 0:  # tests/, benchmarks/: the package ends
            break
        depth = indent // 2 - 1
        if indent % 2 or depth > len(stack):
            continue  # a continuation of the description above
        del stack[depth:]
        names = re.split(r"\s{2,}", line.strip())[0]
        if names.endswith("/"):
            stack.append(names.rstrip("/"))
            continue
        for name in names.split(", "):
            found.add(".".join(["circuitlab", *stack, name.removesuffix(".py")]))
    return found


def modules(root: Path) -> set[str]:
    """Every module, a package's `__init__` apart (its face: the package's line describes it), but the top level's."""
    names = {".".join(p.relative_to(root.parent).with_suffix("").parts) for p in root.rglob("*.py")}
    return {n for n in names if not n.endswith(".__init__")} | {"circuitlab.__init__"}


def test_the_module_map_lists_every_module_and_no_other():
    mapped = mapped_modules((REPO / "docs" / "development.md").read_text())
    actual = modules(PACKAGE)
    assert not actual - mapped, f"modules missing from docs/development.md's map: {sorted(actual - mapped)}"
    stale = {m for m in mapped - actual
             if not m.endswith(".__init__") or not (REPO / (m.replace(".", "/") + ".py")).is_file()}
    assert not stale, f"docs/development.md's map names modules that do not exist: {sorted(stale)}"


def test_the_map_reader_reads_nesting_pairs_and_continuations():
    doc = textwrap.dedent("""\
        ```
        circuitlab/
          __init__.py       the face
          core/             what everything stands on
            errors            one line
            config, plan      two modules
                              and a description that goes on
          locate/
            strategies/       one file per algorithm
              greedy            greedy
            job               locate_task
        tests/              mirror the package
        ```""")
    assert mapped_modules(doc) == {"circuitlab.__init__", "circuitlab.core.errors", "circuitlab.core.config",
                                   "circuitlab.core.plan", "circuitlab.locate.strategies.greedy",
                                   "circuitlab.locate.job"}


# -- the command line's run functions ----------------------------------------------------------------------------

MAX_RUN_LINES = 20


def library_calls(run) -> list[set[str]]:
    """The library functions `run` calls, one set per path through its `if`s (a command with subcommands calls one
    per subcommand): functions (not classes: configs and inputs are built from those) defined outside
    circuitlab.cli and circuitlab.core (the ground every layer stands on: errors, processes, files)."""
    fn = ast.parse(textwrap.dedent(inspect.getsource(run))).body[0]
    local = {a.asname or a.name: (node.module, a.name) for node in ast.walk(fn) if isinstance(node, ast.ImportFrom)
             for a in node.names}

    def resolve(call: ast.Call) -> str | None:
        parts, f = [], call.func
        while isinstance(f, ast.Attribute):
            parts.insert(0, f.attr)
            f = f.value
        if not isinstance(f, ast.Name):
            return None
        if f.id in local:
            module, name = local[f.id]
            home = importlib.import_module(module)
            obj = getattr(home, name) if hasattr(home, name) else importlib.import_module(f"{module}.{name}")
        elif f.id in run.__globals__:
            obj = run.__globals__[f.id]
        else:
            return None
        for attr in parts:
            obj = getattr(obj, attr, None)
        home = getattr(obj, "__module__", None) or ""
        bound_to_class = inspect.isclass(getattr(obj, "__self__", None))  # Circuit.load: building an input
        if (inspect.isfunction(obj) or inspect.ismethod(obj)) and not bound_to_class and \
                home.startswith("circuitlab.") and not home.startswith(("circuitlab.cli", "circuitlab.core")):
            return f"{home}.{obj.__qualname__}"
        return None

    def paths(stmts) -> list[set[str]]:
        found = [set()]
        for stmt in stmts:
            if isinstance(stmt, ast.If):
                branches = paths(stmt.body) + paths(stmt.orelse)
                found = [p | b for p in found for b in branches]
            else:
                calls = {c for node in ast.walk(stmt) if isinstance(node, ast.Call) and (c := resolve(node))}
                found = [p | calls for p in found]
        return found

    return paths(fn.body)


def run_functions() -> dict:
    from circuitlab.cli import COMMANDS

    return {name: run for name, (_, run) in COMMANDS.items()}


# Commands that break the rule today, each with what would fix it; strict, so the entry goes once it is fixed.
KNOWN: dict = {}


def check_run_function(run) -> None:
    lines = len(inspect.getsource(run).rstrip().splitlines())
    assert lines <= MAX_RUN_LINES, f"{run.__module__}.{run.__name__} is {lines} lines (at most {MAX_RUN_LINES})"
    most = max(library_calls(run), key=len)
    assert len(most) <= 1, f"{run.__module__}.{run.__name__} calls {sorted(most)}: give the library one call"


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN[c]))
                                     if c in KNOWN else c for c in sorted(run_functions())])
def test_a_run_function_is_short_and_calls_one_library_function(command):
    check_run_function(run_functions()[command])


def test_the_run_function_reader_counts_library_calls_not_configs_or_helpers():
    from circuitlab.cli.evaluate import run_eval, run_tasks
    from circuitlab.cli.locate import run as run_locate

    def distinct(run) -> set[frozenset]:
        return set(map(frozenset, library_calls(run)))

    assert distinct(run_eval) == {frozenset({"circuitlab.evaluate.job.evaluate_task"})}
    assert distinct(run_locate) == {frozenset({"circuitlab.locate.job.locate_task"})}  # Circuit.load: an input
    assert distinct(run_tasks) == {frozenset()}  # it reads the registry, a dict

    def branches(args):
        from circuitlab.evaluate.job import evaluate_task
        from circuitlab.report.figures import compare_files

        if args.a:
            evaluate_task(args)
        else:
            compare_files(args)
        print(args)

    assert distinct(branches) == {frozenset({"circuitlab.evaluate.job.evaluate_task"}),
                                  frozenset({"circuitlab.report.figures.compare_files"})}
