"""Files in and out: a crash never leaves half a file, a bad file or path gives one line.

Every artefact circuitlab writes goes through here: atomic writes of single files and of whole
directories (temp + rename), JSON with NaN written as null, reads that name the file (and the line of
a JSON Lines file) in their error, and up-front checks that an output path can be written at all.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable

from circuitlab.core.errors import CircuitlabError

# -- writing ---------------------------------------------------------------------------------------


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
    """JSON with non-finite floats written as null (valid JSON everywhere)."""
    return write_text_atomic(path, json.dumps(nan_to_null(obj), indent=indent, allow_nan=False) + "\n")


def write_dir_atomic(target: str | Path, fill: Callable[[Path], object]) -> Path:
    """`fill(tmp)` writes a directory's files into a temp directory (the usual mode: umask applies),
    which then takes `target`'s place; an old `target` is moved aside first and removed last, so a
    crash leaves the old directory or the new one, never half of either."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    tmp, old = target.with_name(f".{target.name}.{tag}.tmp"), target.with_name(f".{target.name}.{tag}.old")
    os.mkdir(tmp, 0o777)
    try:
        fill(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    return write_bytes_atomic(dst, Path(src).read_bytes())


def nan_to_null(obj):
    """NaN and infinities (not-evaluated entries of score tables) as None, in nested lists and dicts."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_null(v) for v in obj]
    return obj


def null_to_nan(rows: Iterable) -> list[float]:
    """A JSON row of numbers back to floats, null as NaN."""
    return [math.nan if x is None else float(x) for x in rows]


def cache_dir() -> Path:
    """Where circuitlab keeps what it can make again (the dequantized embedded model, score tables):
    $CIRCUITLAB_CACHE, else $XDG_CACHE_HOME/circuitlab, else ~/.cache/circuitlab."""
    root = os.environ.get("CIRCUITLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "circuitlab")
    return Path(root)


# -- checking output paths before any work -----------------------------------------------------------


def check_writable(path: str | Path, kind: str = "file", what: str = "--out") -> Path:
    """Refuse, before any work is done, an output `kind` ("file" or "dir") that cannot be created:
    a file where a directory must go, a directory where the file must go, a place where no file can
    be made (tried for real, with a probe file removed at once: permission bits say nothing to root
    or on /proc). Creates nothing that stays."""
    path = Path(path).expanduser()
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise CircuitlabError(f"{what} {path} is a file, not a directory")
        if kind == "file" and path.is_dir():
            raise CircuitlabError(f"{what} {path} is a directory, not a file")
    parent = path if path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CircuitlabError(f"{what} {path} cannot be created: {parent} is a file, not a directory")
    probe = parent / f".circuitlab-probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise CircuitlabError(f"{what} {path} cannot be written: {parent}: {e.strerror}") from None
    return path


# -- reading ---------------------------------------------------------------------------------------


def read_json(path: str | Path, what: str = "JSON file"):
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CircuitlabError(f"malformed {what} {path}: {e}") from None


def read_json_object(path: str | Path, what: str = "JSON file") -> dict:
    """`read_json` of a file that must hold one JSON object."""
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise CircuitlabError(f"malformed {what} {path}: expected a JSON object")
    return obj


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
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise CircuitlabError(f"cannot read {path}: {e}") from None
