"""How this process was started: alone, or as one of several under torchrun / `accelerate launch`.

Read from the launchers' environment (WORLD_SIZE, RANK), so asking costs nothing and imports nothing:
`finetune` (no TransformerLens on its path) and `locate` ask the same way.
"""

from __future__ import annotations

import os


def launched_world() -> int:
    """How many processes torchrun or `accelerate launch` started (1 without them)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def launched_main() -> bool:
    """Whether this is the process that writes and prints (rank 0, or the only one)."""
    return int(os.environ.get("RANK", 0)) == 0
