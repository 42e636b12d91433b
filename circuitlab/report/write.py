"""Writing figures: HTML and PNG, atomically. An HTML figure gets plotly.js from one `plotly.min.js` written beside
it (the default: small files that work offline; where the file is missing, the page says so and how to write it),
inlined (self-contained, ~5 MB each) or from its CDN (online)."""

from __future__ import annotations

import warnings
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from circuitlab.core.io import write_bytes_atomic, write_text_atomic


def png_available() -> bool:
    """Whether kaleido can find a Chromium to render PNGs."""
    from choreographer.browsers.chromium import Chromium

    return Chromium.find_browser(skip_local=False) is not None


def write_plotlyjs(out_dir: str | Path) -> Path:
    """`out_dir/plotly.min.js`, the plotly.js the "directory" HTML files beside it read. A repository keeps it out
    of version control (4.7 MB) and writes it again with this (`make figures-js`)."""
    return write_text_atomic(Path(out_dir) / "plotly.min.js", get_plotlyjs())


PLOTLYJS_TAG = '<script charset="utf-8" src="plotly.min.js"></script>'
MISSING_ID = "circuitlab-plotlyjs-missing"
# Shown until plotly.js has loaded: where plotly.min.js is not beside the page (a fresh clone before `make`, one file
# copied elsewhere, a viewer without JavaScript), the page says why it is empty and how to fix it, instead of nothing.
MISSING_PLOTLYJS = (
    f'<div id="{MISSING_ID}" style="font: 15px/1.5 sans-serif; margin: 1em; padding: 0.8em 1em; '
    'border: 2px solid #c0392b; border-radius: 4px; background: #fdf2f0; max-width: 60em">'
    "<b>This figure cannot be drawn here: it reads <code>plotly.min.js</code> from its own folder, and the file is "
    "not there.</b><br>Write it with <code>python -c &quot;from circuitlab.report.write import write_plotlyjs; "
    "write_plotlyjs('.')&quot;</code> run in this folder (in a circuitlab checkout, <code>make figures-js</code> "
    "writes it for <code>figures/</code>), or open the PNG of the same name beside this file.</div>"
    f'<script>if (window.Plotly) document.getElementById("{MISSING_ID}").remove();</script>'
)


def with_missing_js_message(html: str) -> str:
    """A "directory" HTML figure with the message above added after its plotly.min.js tag (once)."""
    if PLOTLYJS_TAG not in html or MISSING_ID in html:
        return html
    return html.replace(PLOTLYJS_TAG, PLOTLYJS_TAG + MISSING_PLOTLYJS, 1)


def figure_html(fig: go.Figure, plotlyjs: str = "directory") -> str:
    include = {"directory": "directory", "inline": True, "cdn": "cdn"}[plotlyjs]
    return with_missing_js_message(fig.to_html(include_plotlyjs=include, full_html=True))


def write_figures(figs: dict[str, go.Figure], out_dir: str | Path, png: bool = True, scale: float = 2,
                  plotlyjs: str = "directory") -> list[Path]:
    """`stem.html` for every figure (`plotlyjs`: "directory", "inline" or "cdn") and `stem.png`, all PNGs rendered
    with one browser start; returns the paths written.

    Without Chromium (kaleido's renderer) the PNGs are skipped with a warning, never half-written.
    """
    out_dir = Path(out_dir)
    written = [write_text_atomic(out_dir / f"{stem}.html", figure_html(fig, plotlyjs)) for stem, fig in figs.items()]
    if plotlyjs == "directory" and figs:
        written.append(write_plotlyjs(out_dir))
    if png and figs:
        if not png_available():
            warnings.warn("Chromium not found: PNG export skipped (install it: apt-get install chromium)")
            return written
        import kaleido
        import plotly.io as pio

        kaleido.start_sync_server(silence_warnings=True)  # one browser for all the figures
        try:
            with warnings.catch_warnings():
                # plotly always passes kaleido options, which a running server ignores: harmless
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                for stem, fig in figs.items():
                    written.append(write_bytes_atomic(out_dir / f"{stem}.png", pio.to_image(fig, format="png",
                                                                                           scale=scale)))
        finally:
            kaleido.stop_sync_server(silence_warnings=True)
    return written
