"""Atomic writes and safe reads: a crash never leaves half a file, a bad file gives one line."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from circuitlab.errors import CircuitlabError


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj, indent: int | None = 1) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def read_json(path: str | Path, what: str = "JSON file"):
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CircuitlabError(f"malformed {what} {path}: {e}") from None
