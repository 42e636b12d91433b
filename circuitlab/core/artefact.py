"""One result on disk, identified by what made it: reused, resumed, or refused in one line.

Every job that writes a result goes through `Artefact`: a located circuit, an edge circuit, a fine-tuning run, a
reproduction's task, the score cache. Its `identity` is a JSON-able dict of everything that decides the result
(the settings, and fingerprints of the weights and of the data). The finished artefact records it (by default
as its JSON's `made_from`), and so does the partial state of an unfinished run (`PATH.partial/state.json`).
A rerun of the same command then

- reuses a finished artefact made from the same identity (`finished`),
- continues an unfinished one from its partial state (`resume`; `save_state` after every step, atomically),
- and refuses, in one line naming what differs, an artefact or partial state made from another identity, so a
  run never overwrites a result the user did not ask to repeat.

Files are written atomically (`circuitlab.core.io`); `commit` removes the partial state once the artefact is
written. In a run of several processes only the one that `writes` touches the disk.

Crash consistency. The partial state is committed in one atomic step, the rename of `state.json`: its tensors
are written first under a name of their own content (`tensors-SHA.safetensors`), which `state.json` names
with their digest, and the tensors it named before are removed only after it. A crash at any point leaves a
`state.json` that names complete tensors of the same step, so a resumed run never counts a step twice. The
first call that finds the result missing (`finished`, `resume`, `save_state`) takes the output's lock
(`circuitlab.core.io.OutputLock`: one writer per output) and removes what interrupted writes of this output
left (temp files, unreferenced tensors); `commit` (or leaving `with artefact:`) releases it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import (LEFTOVER, OutputLock, fault_point, read_json, remove_leftovers, write_bytes_atomic,
                                write_json_atomic)

STATE, TENSORS = "state.json", "tensors.safetensors"  # TENSORS: the one tensors file of partial states before 0.x


def canonical(identity: dict | None) -> dict | None:
    """The identity as JSON reads it back (tuples as lists, keys as strings), so a recorded one compares equal."""
    return None if identity is None else json.loads(json.dumps(identity, sort_keys=True))


def digest(identity: dict) -> str:
    """A short hash of an identity: a name for an artefact that is found by what made it (a cache entry)."""
    return hashlib.sha256(json.dumps(canonical(identity), sort_keys=True).encode()).hexdigest()[:20]


def differences(a: dict, b: dict | None) -> str:
    if b is None:
        return "it records none"
    return ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def made_from(doc) -> dict | None:
    """Where an artefact keeps its identity unless it says otherwise: its JSON's `made_from`."""
    return doc.get("made_from") if isinstance(doc, dict) else None


@dataclass
class Artefact:
    path: Path
    identity: dict
    what: str = "result"
    identity_of: Callable[[Any], dict | None] = made_from  # reads the identity from the finished artefact's JSON
    partial: Path | None = None  # where the partial state lives (default: PATH.partial)
    writes: bool = True  # False in the processes of a multi-process run that do not write
    siblings: tuple[str, ...] = ()  # other files the artefact writes beside `path` (an edge circuit's .safetensors)
    _lock: OutputLock | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.identity = canonical(self.identity)
        self.partial = Path(self.partial) if self.partial is not None else self.path.with_name(self.path.name + ".partial")

    # -- one writer ------------------------------------------------------------------------------------

    def hold(self) -> None:
        """Become the one writer of this artefact (waiting for another process that is), and repair what
        interrupted writes left: temp files beside the result and in the partial state. Idempotent."""
        if not self.writes or self._lock is not None:
            return
        self._lock = OutputLock(self.path).acquire()
        for target in (self.path, *(self.path.with_name(name) for name in self.siblings)):
            remove_leftovers(target)
        named = self._named_tensors()
        if self.partial.is_dir() and named is not False:  # a damaged state.json: keep everything, resume says so
            for p in self.partial.iterdir():
                if (LEFTOVER.search(p.name) and p.is_file()) or (p.name.startswith("tensors-") and p.name != named):
                    p.unlink(missing_ok=True)

    def release(self) -> None:
        """Let another process write this output (done by `commit`, and on leaving `with artefact:`)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __enter__(self) -> "Artefact":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a job that failed without `with`: its lock goes with the object
        try:
            self.release()
        except Exception:  # at interpreter shutdown filelock may be gone; the kernel releases the flock anyway
            pass

    # -- the finished artefact -------------------------------------------------------------------------

    def finished(self, load: Callable[[Path], Any] = lambda path: path):
        """`load(path)` when the artefact exists and was made from this identity; None when there is none."""
        if not self.path.is_file():
            self.hold()  # another process may be writing it: wait for it, then look again
        if not self.path.is_file():
            return None
        made = canonical(self.identity_of(read_json(self.path, self.what)))
        if made != self.identity:
            self.release()
            raise CircuitlabError(f"{self.path} holds a {self.what} made with other settings (differs in: "
                                  f"{differences(self.identity, made)}); choose another output or delete it")
        if self.writes and self.partial.exists():  # a crash after the result, before the partial state's removal
            self.hold()
            self._drop_partial()
        self.release()
        return load(self.path)

    def commit(self, write: Callable[[], object]) -> None:
        """Write the artefact (`write()`, atomically, its identity recorded), then drop the partial state. A crash
        between the two leaves a finished artefact, which the rerun reuses (and whose partial state it drops)."""
        if self.writes:
            self.hold()
            write()
            fault_point(f"result written, partial state not removed: {self.path.name}")
            self._drop_partial()
            self.release()

    def _drop_partial(self) -> None:
        """The partial state, and first what it says goes with it (`save_state(also_remove=)`): a crash between
        the two is finished by the next run, which reads the list again."""
        try:
            also = (self._saved() or {}).get("also_remove") or []
        except CircuitlabError:
            also = []
        for name in also:
            shutil.rmtree(self.path.parent / name, ignore_errors=True)
            fault_point(f"removed with the partial state: {name}")
        shutil.rmtree(self.partial, ignore_errors=True)

    # -- the partial state -----------------------------------------------------------------------------

    def resume(self) -> tuple[dict, dict] | None:
        """(state, tensors) of an unfinished run made from this identity; None when there is none."""
        self.hold()
        saved = self._saved()
        if saved is None:
            return None
        made = canonical(saved.get("made_from"))
        if made != self.identity:
            self.release()
            raise CircuitlabError(f"{self.partial} holds an unfinished {self.what} with other settings (differs in: "
                                  f"{differences(self.identity, made)}); rerun with those settings to finish it, or "
                                  f"delete {self.partial} to start over")
        name = saved.get("tensors", TENSORS if (self.partial / TENSORS).is_file() else None)
        tensors = {}
        if name:
            from safetensors.torch import load  # only jobs that keep tensors get here; the CLI starts without

            path = self.partial / name
            data = path.read_bytes() if path.is_file() else b""
            if saved.get("tensors_sha256", _sha256(data)) != _sha256(data):
                self.release()
                raise CircuitlabError(f"{path} is missing or damaged (not the tensors {self.partial / STATE} "
                                      f"names); delete {self.partial} to start over")
            tensors = load(data)
        return saved.get("state", {}), tensors

    def save_state(self, state: dict, tensors: dict | None = None, also_remove: list[str] | None = None) -> None:
        """The partial state after a finished step, committed in one step (the rename of state.json): the
        tensors are written first under their own name, and those of the step before are removed after.
        `also_remove`: names beside the result that are resume state too, removed with the partial state once
        the result is written (a fine-tuning run's checkpoints)."""
        if not self.writes:
            return
        self.hold()
        record = {"made_from": self.identity, "state": state, **({"also_remove": also_remove} if also_remove else {})}
        if tensors:
            from safetensors.torch import save

            data = save({k: v.contiguous() for k, v in tensors.items()})
            digest = _sha256(data)
            record.update(tensors=f"tensors-{digest[:16]}.safetensors", tensors_sha256=digest)
            write_bytes_atomic(self.partial / record["tensors"], data)
        write_json_atomic(self.partial / STATE, record)
        for p in self.partial.iterdir():  # the tensors of the step before, no longer named
            if (p.name.startswith("tensors-") or p.name == TENSORS) and p.name != record.get("tensors"):
                p.unlink(missing_ok=True)
                fault_point(f"old partial tensors removed: {self.path.name}")

    def _saved(self) -> dict | None:
        state_file = self.partial / STATE
        if not state_file.is_file():
            return None
        saved = read_json(state_file, f"partial {self.what}")
        return saved if isinstance(saved, dict) else {}

    def _named_tensors(self) -> str | None | bool:
        """The tensors file state.json names (None: none), False when state.json cannot be read."""
        try:
            saved = self._saved()
        except CircuitlabError:
            return False
        return (saved or {}).get("tensors")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
