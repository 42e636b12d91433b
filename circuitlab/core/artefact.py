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
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json, write_bytes_atomic, write_json_atomic

STATE, TENSORS = "state.json", "tensors.safetensors"


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

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.identity = canonical(self.identity)
        self.partial = Path(self.partial) if self.partial is not None else self.path.with_name(self.path.name + ".partial")

    # -- the finished artefact -------------------------------------------------------------------------

    def finished(self, load: Callable[[Path], Any] = lambda path: path):
        """`load(path)` when the artefact exists and was made from this identity; None when there is none."""
        if not self.path.is_file():
            return None
        made = canonical(self.identity_of(read_json(self.path, self.what)))
        if made != self.identity:
            raise CircuitlabError(f"{self.path} holds a {self.what} made with other settings (differs in: "
                                  f"{differences(self.identity, made)}); choose another output or delete it")
        return load(self.path)

    def commit(self, write: Callable[[], object]) -> None:
        """Write the artefact (`write()`, atomically, its identity recorded), then drop the partial state."""
        if self.writes:
            write()
            shutil.rmtree(self.partial, ignore_errors=True)

    # -- the partial state -----------------------------------------------------------------------------

    def resume(self) -> tuple[dict, dict] | None:
        """(state, tensors) of an unfinished run made from this identity; None when there is none."""
        state_file = self.partial / STATE
        if not state_file.is_file():
            return None
        saved = read_json(state_file, f"partial {self.what}")
        made = canonical(saved.get("made_from")) if isinstance(saved, dict) else None
        if made != self.identity:
            raise CircuitlabError(f"{self.partial} holds an unfinished {self.what} with other settings (differs in: "
                                  f"{differences(self.identity, made)}); rerun with those settings to finish it, or "
                                  f"delete {self.partial} to start over")
        tensors = {}
        if (self.partial / TENSORS).is_file():
            from safetensors.torch import load_file  # only jobs that keep tensors get here; the CLI starts without

            tensors = load_file(str(self.partial / TENSORS))
        return saved.get("state", {}), tensors

    def save_state(self, state: dict, tensors: dict | None = None) -> None:
        """The partial state after a finished step: tensors first, then state.json (the commit point)."""
        if not self.writes:
            return
        if tensors:
            from safetensors.torch import save

            write_bytes_atomic(self.partial / TENSORS, save({k: v.contiguous() for k, v in tensors.items()}))
        write_json_atomic(self.partial / STATE, {"made_from": self.identity, "state": state})
