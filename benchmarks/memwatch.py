"""Run a command and report its wall time and peak resident memory, split into what it allocated and what it mapped.

`/usr/bin/time -v`'s "maximum resident set size" counts the pages of memory-mapped files too: a model whose
offloaded weights are read from safetensors files through mmap shows them as resident while the kernel keeps them,
although it can drop them at any time. The budget a user sets with `--max-memory cpu=...` is about the memory the
process itself holds, so this samples /proc/PID/status every `--every` seconds (the process and its children)
and reports the peaks of RssAnon (allocated: tensors, activations), RssFile (mapped files) and VmRSS (both),
and the kernel's own VmHWM of the top process.

    python benchmarks/memwatch.py --json out.json -- circuitlab locate --model DIR ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def status(pid: int) -> dict[str, int]:
    """The memory fields of /proc/PID/status in KiB ({} once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(k) for kid in kids for k in (int(kid), *children(int(kid)))]


def watch(command: list[str], every: float = 0.5) -> dict:
    start = time.time()
    proc = subprocess.Popen(command)
    peaks = dict.fromkeys(FIELDS, 0)
    while proc.poll() is None:
        tree = [status(p) for p in (proc.pid, *children(proc.pid))]
        for key in ("VmRSS", "RssAnon", "RssFile"):
            peaks[key] = max(peaks[key], sum(s.get(key, 0) for s in tree))
        peaks["VmHWM"] = max(peaks["VmHWM"], tree[0].get("VmHWM", 0) if tree else 0)
        time.sleep(every)
    gib = {f"peak_{k}_gib": round(v / 2**20, 2) for k, v in peaks.items()}
    return {"command": command, "returncode": proc.returncode, "seconds": round(time.time() - start, 1), **gib}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="append the result to this JSON Lines file")
    p.add_argument("--label", default=None, help="a name for this row")
    p.add_argument("--every", type=float, default=0.5)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    result = {"label": args.label, **watch(command, args.every)}
    line = json.dumps(result)
    print(line, file=sys.stderr)
    if args.json:
        with args.json.open("a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    sys.exit(main()["returncode"])
