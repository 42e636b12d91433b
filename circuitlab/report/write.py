"""Writing figures: HTML and PNG, atomically. An HTML figure gets plotly.js from one `plotly.min.js` written beside
it (the default: small files that work offline), inlined (self-contained, ~5 MB each) or from its CDN (online)."""

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


def write_figures(figs: dict[str, go.Figure], out_dir: str | Path, png: bool = True, scale: float = 2,
                  plotlyjs: str = "directory") -> list[Path]:
    """`stem.html` for every figure (`plotlyjs`: "directory", "inline" or "cdn") and `stem.png`, all PNGs rendered
    with one browser start; returns the paths written.

    Without Chromium (kaleido's renderer) the PNGs are skipped with a warning, never half-written.
    """
    out_dir = Path(out_dir)
    include = {"directory": "directory", "inline": True, "cdn": "cdn"}[plotlyjs]
    written = [write_text_atomic(out_dir / f"{stem}.html", fig.to_html(include_plotlyjs=include, full_html=True))
               for stem, fig in figs.items()]
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
