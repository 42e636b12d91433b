"""The package's shape, as a test: the import contract of pyproject.toml (layered packages, no cycle of modules
inside a package), modules of at most 400 lines, and a command line that starts without torch."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "transformer_lens", "datasets", "pandas", "plotly", "safetensors")


def test_the_import_contract_holds():
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.argv = ['lint-imports', '--config', 'pyproject.toml']; lint_imports_command()"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "circuitlab").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


@pytest.mark.parametrize("argv", [["--help"], ["locate", "--heads-per-layer", "0", "--task", "capitals"],
                                  ["finetune", "--task", "nope", "--method", "lora", "--out", "x"],
                                  ["locate", "--model", "tiny-llama", "--task", "capitals", "--layers", "3-9"]])
def test_the_command_line_starts_and_refuses_bad_options_without_torch(argv):
    code = ("import sys\nfrom circuitlab.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:  # --help\n    rc = e.code\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & set(" + repr(HEAVY) + "))\n"
            "print(rc, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    rc, heavy = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == ("0" if argv == ["--help"] else "2") and heavy == "[]", out.stdout + out.stderr
