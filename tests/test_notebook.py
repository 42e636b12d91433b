"""The exploration notebook runs from top to bottom (on the tiny model, to stay fast)."""

import base64
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_masking.ipynb"


def test_notebook_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITLAB_MODEL", "tiny-llama")
    monkeypatch.setenv("CIRCUITLAB_TASK", "capitals")
    monkeypatch.setenv("CIRCUITLAB_SAMPLES", "3")
    monkeypatch.setenv("CIRCUITLAB_MAX_DOCS", "16")
    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)  # the notebook's own choice: interactive + static
    monkeypatch.delenv("CIRCUITLAB_DATA", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "tiny-llama: 4 layers x 4 query heads" in text and "3 samples from 16 train docs of capitals" in text
    figures = [o.get("data", {}) for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 5
    from circuitlab.report import png_available

    static = "image/png" if png_available() else "text/html"  # what viewers without plotly.js show
    assert all(static in data for data in figures), [sorted(d) for d in figures]
    if static == "image/png":
        assert all(base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n" for data in figures)
