"""Atomic writes and safe reads: a crash never leaves half a file, a bad file gives one line."""

from __future__ import annotations

import gzip
import json
import os
import secrets
from pathlib import Path

from circuitlab.errors import CircuitlabError


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the usual mode: umask applies
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


def parse_jsonl(lines, where: str) -> list[tuple[str, dict]]:
    """Rows of a JSON Lines text, each with its location `file line N` for error messages."""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CircuitlabError(f"{where} line {n}: malformed JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise CircuitlabError(f"{where} line {n}: expected a JSON object")
        rows.append((f"{where} line {n}", row))
    return rows


def read_jsonl(path: str | Path) -> list[tuple[str, dict]]:
    """`parse_jsonl` of a `.jsonl` or `.jsonl.gz` file."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return parse_jsonl(f, str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise CircuitlabError(f"cannot read {path}: {e}") from None
