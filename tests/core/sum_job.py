"""A small resumable job on an `Artefact`, the shape of `edges`' running sum: three steps, each adding a tensor
to a running sum saved in the partial state, then the result. Run in-process by tests/core/test_artefact.py
and as a real process (`python -m tests.core.sum_job OUT IDENTITY`) for the two-writer tests."""

from __future__ import annotations

import json
import sys

N_STEPS = 3


def step_tensor(i: int):
    import torch

    return torch.arange(4, dtype=torch.float32) * (i + 1) + 0.25 * i  # step i's contribution


def run(out, identity: dict) -> dict:
    import torch

    from circuitlab.core.artefact import Artefact
    from circuitlab.core.io import read_json, write_json_atomic

    with Artefact(out, identity, "sum") as a:
        done = a.finished(read_json)
        if done is not None:
            return {**done, "reused": True}
        resumed = a.resume()
        start, total = (resumed[0]["done"], resumed[1]["total"]) if resumed else (0, torch.zeros(4))
        for i in range(start, N_STEPS):
            total = total + step_tensor(i)
            a.save_state({"done": i + 1}, {"total": total})
        result = {"made_from": a.identity, "total": total.tolist()}
        a.commit(lambda: write_json_atomic(out, result))
        return result


if __name__ == "__main__":
    from circuitlab.core.errors import CircuitlabError

    try:
        doc = run(sys.argv[1], json.loads(sys.argv[2]))
    except CircuitlabError as e:
        print(f"circuitlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(("reused " if doc.get("reused") else "made ") + json.dumps(doc["total"]))
