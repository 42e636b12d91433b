"""Each figure builder on small hand-made circuits: the figure carries exactly the circuits' numbers."""

import json
import math
import random
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from circuitlab import report

REPO = Path(__file__).resolve().parents[2]
from circuitlab.circuits.circuit import AllDocsCurve, Circuit, ModelInfo, Sample, Selection, TaskInfo
from circuitlab.cli import main
from circuitlab.core.errors import CircuitlabError
from circuitlab.report import comparison_figures, style, write
from circuitlab.report.comparison import compare

L, H = 4, 3


def make_circuit(task: str, seed: int, split: str = "train", all_docs: bool = True) -> Circuit:
    rng = random.Random(seed)
    single = [[2 + rng.random() for _ in range(H)] for _ in range(L)]
    conditioned = [[2 + layer + rng.random() for _ in range(H)] for layer in range(L)]
    conditioned[0][0] = math.nan  # a missing entry must survive as a gap, not break the figure
    heads = {layer: sorted(rng.sample(range(H), 1)) for layer in range(L)}
    other = lambda: {layer: sorted(rng.sample(range(H), 1)) for layer in range(L)}  # noqa: E731
    return Circuit(
        model=ModelInfo("tiny", "tiny", None, "f00d", L, H, H, 8, 24), task=TaskInfo(task, split),
        samples=[Sample("Q:", " A", 0), Sample("Q2:", " B", 1)], strategy="layer-conditioned", n_per_layer=1,
        heads=heads, selected_by="conditioned", baseline_loss=2.0, loss_curve=[2.5 + k for k in range(L)],
        scores={"single": single, "conditioned": conditioned},
        selections=[Selection("greedy", other(), [2.2 + k / 2 for k in range(L)]),
                    Selection("random", other(), [2.1 + k / 4 for k in range(L)], seed=0),
                    Selection("random", other(), [2.3 + k / 4 for k in range(L)], seed=1)],
        all_docs=AllDocsCurve(9, split, 2.5, [2.6 + k for k in range(L)]) if all_docs else None,
    )


@pytest.fixture
def circuits():
    return [make_circuit("sst2", 0), make_circuit("hellaswag", 1, split="validation"), make_circuit("piqa", 2)]


def traces(fig: go.Figure, kind: str):
    return [t for t in fig.data if t.type == kind]


def test_score_heatmaps(circuits):
    fig = report.score_heatmaps(circuits, "conditioned")
    maps = traces(fig, "heatmap")
    assert len(maps) == 3
    for t, c in zip(maps, circuits):
        # Each layer's colour is its loss minus what the layer started from: the unmasked loss at the first
        # layer, then the loss with the earlier layers' circuit heads masked (the loss curve one layer back).
        baseline = np.array([2.0] + [c.loss_curve[layer - 1] for layer in range(1, L)])[:, None]
        np.testing.assert_allclose(np.array(t.z, float), np.array(c.scores["conditioned"], float) - baseline)
        assert list(t.x) == list(range(H)) and list(t.y) == list(range(L))
        assert t.coloraxis == "coloraxis"  # one shared colour scale across panels
        assert "nats/token" in t.customdata[1][0] and "vs the layer's baseline" in t.customdata[1][0]
    values = [abs(x) for t in maps for row in t.z for x in row if math.isfinite(x)]
    assert fig.layout.coloraxis.cmin == -max(values) and fig.layout.coloraxis.cmax == max(values)
    assert fig.layout.coloraxis.cmid == 0 and "nats/token" in fig.layout.coloraxis.colorbar.title.text
    # The layer-conditioned circuit's heads are outlined on its own table, each cell exactly...
    axes = ["x", "x2", "x3"]
    for c, axis in zip(circuits, axes):
        cells = sorted((s.y0 + 0.5, s.x0 + 0.5) for s in fig.layout.shapes if s.xref == axis)
        assert cells == sorted(c.head_list)
    assert all(s.x1 - s.x0 == 1 and s.y1 - s.y0 == 1 for s in fig.layout.shapes)
    # ...but not on the single-head table, which drives the greedy selection; there the baseline is the unmasked loss.
    single = report.score_heatmaps(circuits, "single")
    assert single.layout.shapes == ()
    np.testing.assert_allclose(np.array(traces(single, "heatmap")[0].z, float),
                               np.array(circuits[0].scores["single"]) - 2.0)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["sst2", "hellaswag (validation split)", "piqa"]
    assert fig.layout.yaxis.title.text == style.LAYER_AXIS and fig.layout.yaxis.autorange == "reversed"
    for c in circuits:
        c.baseline_loss = None  # nothing to measure against: the loss itself, on a sequential scale
    fig = report.score_heatmaps(circuits, "conditioned")
    np.testing.assert_array_equal(np.array(traces(fig, "heatmap")[0].z, float),
                                  np.array(circuits[0].scores["conditioned"], float))
    assert fig.layout.coloraxis.colorscale[0][1] != single.layout.coloraxis.colorscale[0][1]


def test_score_heatmaps_missing_table(circuits):
    del circuits[1].scores["single"]
    with pytest.raises(CircuitlabError, match="hellaswag"):
        report.score_heatmaps(circuits, "single")


def test_loss_curves(circuits):
    fig = report.loss_curves(circuits)
    lines = [t for t in traces(fig, "scatter") if t.name != "unmasked"]
    assert len(lines) == 3 * 3  # own selection + greedy + random (the mean of its seeds), per circuit
    own = lines[0]
    assert own.name == "layer-conditioned"
    assert list(own.x) == list(range(L + 1))  # 0 = nothing masked ... L = every layer masked
    assert list(own.y) == [circuits[0].baseline_loss, *circuits[0].loss_curve]
    greedy = next(t for t in lines if t.name == "greedy")
    assert list(greedy.y) == [circuits[0].baseline_loss, *circuits[0].selections[0].loss_curve]
    rand = next(t for t in lines if t.name == "random (mean of 2 seeds)")
    seeds = [s.loss_curve for s in circuits[0].selections[1:]]
    assert list(rand.y) == pytest.approx([circuits[0].baseline_loss, *map(statistics.fmean, zip(*seeds))])
    base = [t for t in traces(fig, "scatter") if t.name == "unmasked"]
    assert len(base) == 3 and set(base[0].y) == {circuits[0].baseline_loss}
    # One legend entry per selection, one colour per selection across panels.
    assert sum(t.showlegend is not False for t in fig.data) == 4
    assert len({t.line.color for t in lines if t.name == "greedy"}) == 1
    assert fig.layout.xaxis.title.text == "number of masked layers" and fig.layout.yaxis.title.text == style.LOSS


def test_curve_points_without_baseline():
    assert report.curve_points([3.0, 4.0], None) == ([1, 2], [3.0, 4.0])
    assert report.curve_points([3.0, 4.0], 1.0) == ([0, 1, 2], [1.0, 3.0, 4.0])


def test_a_random_runs_own_seeds_are_drawn_one_by_one(circuits):
    c = circuits[0]
    c.strategy, c.seed, c.selected_by = "random", 0, None
    c.selections = [Selection("random", c.heads, [3.0] * L, seed=1), Selection("random", c.heads, [4.0] * L, seed=2)]
    names = [t.name for t in traces(report.loss_curves([c]), "scatter")]
    assert names == ["random (seed 0)", "random (seed 1)", "random (seed 2)", "unmasked"]


def test_all_docs_curves(circuits):
    fig = report.all_docs_curves(circuits)
    lines = traces(fig, "scatter")
    assert [t.name for t in lines[:2]] == ["selected samples", "all docs"]
    every = circuits[0].all_docs
    assert list(lines[1].y) == [every.baseline_loss, *every.loss_curve]
    assert list(lines[0].y) == [circuits[0].baseline_loss, *circuits[0].loss_curve]
    assert "2 samples vs 9 docs" in fig.layout.annotations[0].text
    with pytest.raises(CircuitlabError, match="all-documents"):
        report.all_docs_curves([make_circuit("x", 3, all_docs=False)])


def test_circuit_patterns(circuits):
    fig = report.circuit_patterns(circuits)
    for t, c in zip(traces(fig, "heatmap"), circuits):
        z = np.array(t.z)
        assert z.shape == (L, H) and z.sum() == len(c.head_list)
        assert {(int(layer), int(h)) for layer, h in zip(*np.nonzero(z))} == set(c.head_list)


def test_comparison_figures(circuits):
    result = compare(circuits)
    figs = report.figures_for(circuits, ("comparison",))
    assert set(figs) == {"fig2a_overlap_rate", "fig8_jaccard_similarity", "head_frequency", "fig2b_frequency_distribution"}
    (overlap,) = figs["fig2a_overlap_rate"].data
    np.testing.assert_allclose(np.array(overlap.z), result.overlap.to_numpy())
    assert (overlap.zmin, overlap.zmax) == (0, 1) and list(overlap.x) == ["sst2", "hellaswag", "piqa"]
    (jac,) = figs["fig8_jaccard_similarity"].data
    np.testing.assert_allclose(np.array(jac.z), result.jaccard.to_numpy())
    (freq,) = figs["head_frequency"].data
    np.testing.assert_array_equal(np.array(freq.z), result.frequency.to_numpy())
    assert "of 3 tasks" in freq.hovertemplate and list(freq.colorbar.tickvals) == [0, 1, 2, 3]
    for k in range(4):  # each count one flat band of its own colour: k's position lies inside band k only
        at = (k - freq.zmin) / (freq.zmax - freq.zmin)
        inside = [color for (lo, color), (hi, _) in zip(freq.colorscale[::2], freq.colorscale[1::2]) if lo < at < hi]
        assert len(inside) == 1
    bands = [color for _, color in freq.colorscale[::2]]
    assert len(bands) == 4 and len(set(bands)) == 4 and freq.colorscale[0][0] == 0 and freq.colorscale[-1][0] == 1
    bar, chance = figs["fig2b_frequency_distribution"].data  # the located circuits, and random ones' expectation
    assert list(bar.x) == [0, 1, 2, 3] and sum(bar.y) == L * H
    assert list(chance.x) == [0, 1, 2, 3] and sum(chance.y) == pytest.approx(L * H)
    assert "number of heads" in figs["fig2b_frequency_distribution"].layout.yaxis.title.text
    assert comparison_figures.overlap_heatmap(result).data[0].z == overlap.z


def test_one_registry_names_the_figures_for_plot_and_reproduce(circuits):
    assert set(report.figures_for(circuits, ("circuits",))) == {
        "fig1_hellaswag", "fig4_single_head_losses", "fig5_layer_conditioned_losses", "fig6_loss_curves",
        "fig7_samples_vs_all_docs", "fig9_circuit_patterns"}
    bare = make_circuit("x", 4, all_docs=False)
    bare.scores = {}
    assert set(report.figures_for([bare])) == {"fig6_loss_curves", "fig9_circuit_patterns"}


def test_write_figure_html(circuits, tmp_path):
    fig = report.loss_curves(circuits[:1])
    html, js = report.write_figures({"curves": fig}, tmp_path / "dir", png=False)  # the default: plotly.js beside
    text = html.read_text()
    assert html.name == "curves.html" and "<html>" in text and js.name == "plotly.min.js"
    assert 'src="plotly.min.js"' in text and len(text) < 200_000 and len(js.read_text()) > 1_000_000
    assert str(circuits[0].loss_curve[-1]) in text
    (inline,) = report.write_figures({"curves": fig}, tmp_path / "inline", png=False, plotlyjs="inline")
    text = inline.read_text()
    assert '<script src="' not in text and len(text) > 1_000_000  # plotly.js is inlined: self-contained
    (small,) = report.write_figures({"curves_cdn": fig}, tmp_path / "cdn", png=False, plotlyjs="cdn")
    text = small.read_text()
    assert 'src="https://cdn.plot.ly/plotly-' in text and len(text) < 200_000  # loads plotly.js, stays small
    assert str(circuits[0].loss_curve[-1]) in text


MESSAGE = f'id="{write.MISSING_ID}"'  # the message's element, which the page removes once plotly.js loads


def rendered(html: Path) -> str:
    """The page's DOM after its scripts ran in headless Chromium, with no network."""
    out = subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-background-networking", "--no-first-run", "--proxy-server=127.0.0.1:9",
                          f"--user-data-dir={html.parent / '.chromium'}", "--virtual-time-budget=10000", "--dump-dom",
                          html.as_uri()], capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed")
def test_html_figures_render_offline(circuits, tmp_path):
    fig = report.loss_curves(circuits[:1])
    html, _ = report.write_figures({"curves": fig}, tmp_path / "dir", png=False)
    (online,) = report.write_figures({"curves": fig}, tmp_path / "cdn", png=False, plotlyjs="cdn")
    drawn = rendered(html)
    assert 'class="main-svg"' in drawn and MESSAGE not in drawn  # plotly drew it, and took the message away
    assert 'class="main-svg"' not in rendered(online)  # the CDN cannot be reached: nothing is drawn


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed")
def test_a_figure_without_its_plotlyjs_says_so_and_how_to_write_it(circuits, tmp_path):
    """A fresh clone before `make`, one file copied elsewhere: the page is not blank but says what is missing."""
    html, js = report.write_figures({"curves": report.loss_curves(circuits[:1])}, tmp_path / "dir", png=False)
    js.unlink()
    page = rendered(html)
    assert 'class="main-svg"' not in page and MESSAGE in page
    assert "plotly.min.js" in page and "write_plotlyjs" in page and "make figures-js" in page
    write.write_plotlyjs(html.parent)  # the command the page names puts it right
    assert MESSAGE not in rendered(html)


MEASURE = """<script>window.addEventListener("load", () => setTimeout(() => {
  const right = Math.max(...[...document.querySelectorAll("svg text")].map(t => t.getBoundingClientRect().right));
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({right, width: document.querySelector(".main-svg").getBoundingClientRect().width});
  document.body.appendChild(out);
}, 300));</script>"""


def text_extent(fig: go.Figure, directory: Path) -> dict:
    """How far right the figure's rightmost text reaches, and the figure's width, as Chromium draws them."""
    html, _ = report.write_figures({"f": fig}, directory, png=False)
    html.write_text(html.read_text().replace("</body>", MEASURE + "</body>"))
    return json.loads(re.search(r'<pre id="measure">(.*?)</pre>', rendered(html)).group(1))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed")
def test_a_one_task_heatmaps_subtitle_fits_the_figure(circuits, tmp_path):
    """The layer-conditioned heatmap's subtitle (three notes) ran past a one-panel figure's edge, clipped."""
    fig = report.score_heatmaps(circuits[:1], "conditioned")
    assert "outlined" in fig.layout.title.subtitle.text
    extent = text_extent(fig, tmp_path / "fitted")
    assert extent["right"] <= extent["width"], extent
    fig.update_layout(title=dict(text="one line", subtitle=dict(text=fig.layout.title.subtitle.text.replace("<br>", " "))))
    unwrapped = text_extent(fig, tmp_path / "unwrapped")
    assert unwrapped["right"] > unwrapped["width"], unwrapped  # the measure sees a clipped line


BOXES = """<script>window.addEventListener("load", () => setTimeout(() => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const titles = [...document.querySelectorAll("g[class^='g-x']")].filter(e => /^g-x\\d*title$/.test(e.getAttribute("class")));
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({titles: titles.map(box).filter(b => b[2] > b[0]), svg: box(document.querySelector(".main-svg")),
                                    legend: box(document.querySelector(".legend")), bar: box(document.querySelector(".colorbar"))});
  document.body.appendChild(out);
}, 300));</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed")
@pytest.mark.parametrize("n", [1, 3])
def test_the_overviews_legend_and_colour_bar_sit_under_the_axis_titles(circuits, tmp_path, n):
    """With one task (the notebook's figure) the legend lay over the curves' x-axis title, the colour bar over the
    heatmaps'; measured as Chromium draws them: no overlap, all inside the figure."""
    from circuitlab.report.overview import overview

    html, _ = report.write_figures({"o": overview(circuits[:n])}, tmp_path, png=False)
    html.write_text(html.read_text().replace("</body>", BOXES + "</body>"))
    m = json.loads(re.search(r'<pre id="measure">(.*?)</pre>', rendered(html)).group(1))
    assert len(m["titles"]) == 3  # the bottom row's three x-axis titles
    for below in (m["legend"], m["bar"]):
        assert all(below[1] >= title[3] or below[2] <= title[0] or below[0] >= title[2] for title in m["titles"])
        assert below[3] <= m["svg"][3]


@pytest.mark.skipif(not report.png_available(), reason="Chromium not installed: kaleido cannot render PNG")
def test_write_figures_png(circuits, tmp_path):
    figs = {"patterns": report.circuit_patterns(circuits), "curves": report.loss_curves(circuits)}
    written = report.write_figures(figs, tmp_path, scale=1)
    pngs = [p for p in written if p.suffix == ".png"]
    assert sorted(p.name for p in pngs) == ["curves.png", "patterns.png"]
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_plot(circuits, tmp_path, capsys):
    paths = [str(c.save(tmp_path / f"{c.task.name}.json")) for c in circuits]
    assert main(["plot", *paths, "--out", str(tmp_path / "figs"), "--no-png"]) == 0
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {"fig1_hellaswag.html", "fig4_single_head_losses.html", "fig5_layer_conditioned_losses.html",
            "fig6_loss_curves.html", "fig7_samples_vs_all_docs.html", "fig9_circuit_patterns.html",
            "plotly.min.js"} == names  # the HTML files' plotly.js, once, beside them
    assert main(["plot", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x"), "--no-png"]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed")
def test_the_committed_figures_render_offline(tmp_path):
    """Every committed HTML figure loads plotly.js from the file beside it, and one drawn with no network draws."""
    pages = sorted((REPO / "figures").rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text()
        assert 'src="plotly.min.js"' in text and (page.parent / "plotly.min.js").is_file(), page
        assert write.MISSING_ID in text, f"{page} is blank where plotly.min.js is missing"
    copy = tmp_path / "fig"  # chromium writes its profile beside the page: not into the repo
    shutil.copytree(pages[0].parent, copy, ignore=shutil.ignore_patterns("*.png", "circuits", "tables"))
    assert 'class="main-svg"' in rendered(copy / pages[0].name)
