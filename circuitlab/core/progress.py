"""Progress bars with an ETA, shown only where someone is watching: off when a job is asked for none, and off when
stderr is not a terminal (tqdm's `disable=None`), so a log file gets no carriage-return lines."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(enabled: bool = True, **kwargs) -> tqdm:
    return tqdm(disable=True if not enabled else None, **kwargs)
