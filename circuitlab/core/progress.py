"""Progress bars with an ETA, shown only where someone is watching: off when a job is asked for none, and off when
stderr is not a terminal (tqdm's `disable=None`), so a log file gets no carriage-return lines."""

from __future__ import annotations

from functools import partialmethod

from tqdm.auto import tqdm


def progress_bar(enabled: bool = True, **kwargs) -> tqdm:
    return tqdm(disable=True if not enabled else None, **kwargs)


def terminal_only_bars() -> None:
    """Give every tqdm bar circuitlab's rule: off where its stream is not a terminal, unless its caller says otherwise.

    Other libraries' bars (transformers' "Loading weights" and "Writing model shards", the GGUF loader's
    dequantization, the hub's downloads) create tqdm with its default `disable=False`, so they write carriage-return
    lines into every log. tqdm's own switch, `TQDM_DISABLE`, is read when tqdm is imported, which the command line
    has done by the time it knows it runs; changing the class's default is the one switch that still works then.
    A bar whose caller passes `disable` keeps it, so `--no-progress` and circuitlab's own bars are unchanged."""
    from tqdm import std

    if not getattr(std.tqdm, "_circuitlab_terminal_only", False):
        std.tqdm.__init__ = partialmethod(std.tqdm.__init__, disable=None)
        std.tqdm._circuitlab_terminal_only = True
