"""Files in and out: a crash never leaves half a file, a bad file or path gives one line.

Every artefact circuitlab writes goes through here: atomic writes of single files and of whole
directories (temp + rename), JSON with NaN written as null, reads that name the file (and the line of
a JSON Lines file) in their error, and up-front checks that an output path can be written at all.

Every write passes named *write boundaries* (`fault_point`): points where a crash leaves the disk in a
state of its own (a temp file written but not renamed, a directory filled but not in place). Tests crash
there on purpose, through `fault_hook` or `$CIRCUITLAB_FAULT`, instead of killing a process at a
lucky moment, so every state a crash can leave is tried and a rerun is checked to repair it.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable

from circuitlab.core.errors import CircuitlabError

# -- write boundaries and the fault hook -------------------------------------------------------------

FAULT_ENV = "CIRCUITLAB_FAULT"
FAULT_EXIT = 75  # the exit code of a process crashed on purpose at a write boundary
fault_hook: Callable[[str], None] | None = None  # in-process tests: called at every write boundary
_hits = [0]


class Crash(BaseException):
    """What an in-process fault hook raises to stand for a crash: the writers here leave their temp files
    as a killed process would (no cleanup runs for it), so the next run's repair is what gets tested."""


def fault_point(name: str) -> None:
    """A write boundary. `$CIRCUITLAB_FAULT` (read at every call, for subprocess tests):
    `log:FILE` appends every boundary's name to FILE; `exit:N` ends the process with `os._exit` at the Nth
    boundary (nothing flushed, nothing cleaned: a kill -9 at that point); `pause:N` writes `paused at NAME` to
    stderr at the Nth boundary and waits for stdin to close (two-writer tests: the lock is held meanwhile)."""
    if fault_hook is not None:
        fault_hook(name)
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, _, arg = spec.partition(":")
    if action == "log":
        with open(arg, "a", encoding="utf-8") as f:
            f.write(name + "\n")
        return
    _hits[0] += 1
    if str(_hits[0]) != arg:
        return
    if action == "exit":
        os._exit(FAULT_EXIT)
    if action == "pause":
        import sys

        sys.stderr.write(f"paused at {name}\n")
        sys.stderr.flush()
        sys.stdin.read()


# -- writing ---------------------------------------------------------------------------------------


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """`data` as the file `path`, whole or not at all (temp file + rename). The temp files that interrupted writes
    of `path` left are removed first: a file is rewritten by the job that owns it (figures, tables, a study's
    summary), so the next run's write repairs what a crash left, with or without a lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in leftovers(path):
        if p.name.startswith(path.name) and p.is_file():
            p.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the usual mode: umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        fault_point(f"file written, not renamed: {path.name}")
        os.replace(tmp, path)
    except Crash:
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fault_point(f"file renamed: {path.name}")
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj, indent: int | None = 1) -> Path:
    """JSON with non-finite floats written as null (valid JSON everywhere)."""
    return write_text_atomic(path, json.dumps(nan_to_null(obj), indent=indent, allow_nan=False) + "\n")


def write_dir_atomic(target: str | Path, fill: Callable[[Path], object]) -> Path:
    """`fill(tmp)` writes a directory's files into a temp directory (the usual mode: umask applies),
    which then takes `target`'s place; an old `target` is moved aside first and removed last, so a
    crash leaves the old directory or the new one, never half of either. What a crash leaves beside
    `target` (`.NAME.XXXXXXXX.tmp`, `.NAME.XXXXXXXX.old`) is repaired by `remove_leftovers(target)`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    tmp, old = target.with_name(f".{target.name}.{tag}.tmp"), target.with_name(f".{target.name}.{tag}.old")
    os.mkdir(tmp, 0o777)
    try:
        fill(tmp)
        fault_point(f"directory filled, not renamed: {target.name}")
        if target.exists():
            os.replace(target, old)
            fault_point(f"old directory moved aside: {target.name}")
        os.replace(tmp, target)
        fault_point(f"directory renamed: {target.name}")
    except Crash:
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


LEFTOVER = re.compile(r"\.[0-9a-f]{8}\.(tmp|old)$")


def leftovers(target: str | Path) -> list[Path]:
    """What interrupted atomic writes of `target` left beside it: `NAME.XXXXXXXX.tmp` files
    (`write_bytes_atomic`) and `.NAME.XXXXXXXX.tmp` / `.old` directories (`write_dir_atomic`)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if LEFTOVER.search(p.name) and
                  p.name[: -len(".XXXXXXXX.tmp")] in (target.name, f".{target.name}"))


def remove_leftovers(target: str | Path) -> list[Path]:
    """Repair what interrupted writes of `target` left: temp files and directories are removed, and an old
    directory moved aside by `write_dir_atomic` takes its place again when the new one never arrived. Only
    the one writer of `target` (who holds `output_lock(target)`) may call this: a temp file of a write in
    progress looks the same."""
    target, found = Path(target), leftovers(target)
    for p in found:
        if p.name.endswith(".old") and not target.exists():
            os.replace(p, target)
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


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
    for p in (path, *path.parents):  # a link to itself, or to nowhere: writing would replace it or fail with ELOOP
        if p.is_symlink() and not p.exists():
            raise CircuitlabError(f"{what} {path} cannot be written: {p} is a symbolic link that leads nowhere "
                                  "(a loop or a missing target)")
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


# -- one writer per output -----------------------------------------------------------------------------


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


class OutputLock:
    """One writer per output path, across processes: an `flock` on `.NAME.lock` beside the output (through
    `filelock`), released when the holder finishes or dies (the kernel drops it with the process, so a crash
    leaves no stale lock). A second process waits for the first, saying so in one line on stderr, and then
    finds its result (reused when made from the same settings, refused in one line when not), so two
    processes never write one output at once and identical jobs do the work once. Reentrant in a process
    (a job inside a study locks the path its study locked). The lock file is removed on release: filelock
    opens it anew on every try and checks that the inode it locked is still linked. So are the directories
    taking the lock created, when they are still empty: a job that fails before its first write leaves nothing."""

    def __init__(self, target: str | Path):
        self.target, self.path, self._lock, self._made = Path(target), lock_path(target), None, []

    def acquire(self) -> "OutputLock":
        if self._lock is not None:
            return self
        from filelock import FileLock, Timeout

        parent = self.path.parent
        self._made = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
        lock = FileLock(str(self.path), is_singleton=True)
        waited = False
        while True:
            parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0 if not waited else -1)
                break
            except FileNotFoundError:  # the holder removed the empty directory it had made: make it again
                continue
            except Timeout:
                import sys

                sys.stderr.write(f"circuitlab: {self.target} is being written by another process; waiting for it\n")
                sys.stderr.flush()
                waited = True
        self._lock = lock
        return self

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        if lock.lock_counter == 1:  # the last hold in this process: nothing of ours stays beside the output
            self.path.unlink(missing_ok=True)
            for d in self._made:  # still locked: a waiting process that finds its directory gone makes it again
                try:
                    d.rmdir()
                except OSError:  # not empty (the job wrote there, or another process waits in it)
                    break
        lock.release()

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def output_lock(target: str | Path) -> OutputLock:
    """`with output_lock(OUT):` the one writer of OUT, its leftovers of interrupted writes repaired first."""
    return _Repairing(target)


class _Repairing(OutputLock):
    def acquire(self) -> OutputLock:
        held = self._lock is not None
        super().acquire()
        if not held:
            remove_leftovers(self.target)
        return self


# -- weight files, checked before anything loads them ----------------------------------------------------


def safetensors_problem(path: str | Path) -> str | None:
    """What is wrong with a safetensors file, read from its header alone (None: nothing): missing, empty,
    a header that is not JSON or that names data past the end of the file. Checked before safetensors or
    torch reads it, so a damaged file is one line naming it, not a Rust panic or a read of half a tensor."""
    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size < 8:
        return f"{path} is {'empty' if size == 0 else 'truncated'} ({size} bytes)"
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8 or n > 100_000_000:
            return f"{path} is damaged: its header is longer than the file"
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            return f"{path} is damaged: its header is not JSON (not a safetensors file?)"
    if not isinstance(header, dict):
        return f"{path} is damaged: its header is not a JSON object"
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        return f"{path} is damaged: its header is not a safetensors header"
    if max(ends, default=0) != size - 8 - n:
        return f"{path} is damaged: its tensors do not fill the file (truncated?)"
    return None
