"""A fine-tuning run directory as `track` reads it, before any model loads: its config, its checkpoints (PEFT
adapter directories), and what a step's circuit is computed from (the adapter's bytes, the pairs, the settings)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object
from circuitlab.edges.config import EdgesConfig
from circuitlab.edges.pairs import Pair, pairs_digest
from circuitlab.finetune.config import METHODS
from circuitlab.headmap.dirs import AdapterDir

HS_REFUSED = ("HeadMap-HS adds its output to the hidden state after the MLP: the edge graph has no writer for "
              "it and it cannot be merged, so {what} cannot be tracked")
MERGED = "merged into o_proj"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path | None  # the adapter directory; None for the base model (step 0)

    @property
    def name(self) -> str:
        return f"step-{self.step}"


@dataclass
class RunInfo:
    """What `track` needs of a fine-tuning run, read and checked before any model loads."""

    run_dir: Path
    config: dict  # the run's TrainConfig as saved
    checkpoints: list[Checkpoint]  # step 0 (the base model) first, then in step order
    headmap: str | None  # "merged into o_proj" for HeadMap MHA, None without HeadMap


def read_run(run_dir: str | Path) -> RunInfo:
    """The run's config and checkpoints; refuses a directory without them and HeadMap-HS adapters."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise CircuitlabError(f"{run_dir}: no config.json (not a `circuitlab finetune` run directory)")
    config = read_json_object(path, "run config")
    if not isinstance(config.get("model"), str) or not isinstance(config.get("method"), str):
        raise CircuitlabError(f"{path}: not a circuitlab finetune config (needs its model and method)")
    if config["method"] not in METHODS:
        raise CircuitlabError(f"{path}: unknown method {config['method']!r}")
    if not METHODS[config["method"]].mergeable:  # headmap-hs and its combinations
        raise CircuitlabError(HS_REFUSED.format(what=f"a {config['method']} run"))
    found = []
    for d in (run_dir / "checkpoint").glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if step.isdigit() and (d / "adapter_config.json").is_file():
            found.append(Checkpoint(int(step), d))
    if not found:
        raise CircuitlabError(f"{run_dir}: no checkpoints with an adapter (checkpoint/checkpoint-N/adapter_config.json);"
                              " train with --save-every K to keep them")
    found.sort(key=lambda c: c.step)
    headmap = None
    for c in found:
        variant = AdapterDir.read(c.path).variant
        if variant is not None:
            if not variant.mergeable:
                raise CircuitlabError(HS_REFUSED.format(what=f"{c.path}"))
            headmap = MERGED
    return RunInfo(run_dir, config, [Checkpoint(0, None), *found], headmap)


def adapter_digest(c: Checkpoint) -> str:
    """The adapter's files' bytes, hashed: which weights a step file was computed from, known without
    loading the model (the model's own fingerprint needs it loaded)."""
    if c.path is None:
        return "base"
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        f = c.path / name
        h.update(name.encode() + (f.read_bytes() if f.is_file() else b""))
    return h.hexdigest()[:16]


def step_identity(c: Checkpoint, model: str, pairs: list[Pair], cfg: EdgesConfig, task: str) -> dict:
    return {"adapter": adapter_digest(c), "model": model, "pairs": pairs_digest(pairs), "task": task,
            "settings": asdict(cfg)}
