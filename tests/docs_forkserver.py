"""A warm `circuitlab` (and `python FILE`, `lm_eval`) for the docs' shell blocks, so `make test` can run dozens of
documented commands without paying torch's and transformers' import (seconds each) every time.

`python tests/docs_forkserver.py SOCKET` imports the heavy packages once and listens on a Unix socket; `shims(dir)`
writes small executables, `circuitlab`, `python` and `lm_eval`, which bash finds first on PATH. Each hands its
arguments, working directory, environment and its stdin/stdout/stderr (the file descriptors themselves) to the
server, which forks: the child runs `circuitlab.cli.main(argv)` (what the `circuitlab` console script runs), the
file of `python FILE`, the CLI of `python -m circuitlab`, or lm_eval's own CLI, as a fresh process would, and
reports the exit code. Any other `python ...` line runs the real interpreter. So every line of a block runs in
bash as written; only the process start is shared.
"""

import json
import os
import signal
import socket
import sys

CLIENT = """#!{python} -S
import json, os, socket, sys
argv = sys.argv[1:]
if os.path.basename(sys.argv[0]) == "python":
    if not argv or argv[0].startswith("-") and argv[:2] != ["-m", "circuitlab"]:
        os.execv({python!r}, [{python!r}, *argv])  # not a file or the CLI: the real interpreter
    argv = ["python", *argv]
elif os.path.basename(sys.argv[0]) == "lm_eval":
    argv = ["lm_eval", *argv]
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["CIRCUITLAB_FORKSERVER"])
socket.send_fds(s, [json.dumps([argv, os.getcwd(), dict(os.environ)]).encode()], [0, 1, 2])
s.shutdown(socket.SHUT_WR)
code = s.recv(16)
sys.exit(int(code) if code else 1)
"""


def shims(bin_dir) -> None:
    """`circuitlab`, `python` and `lm_eval` in bin_dir, each the client above."""
    os.makedirs(bin_dir, exist_ok=True)
    for name in ("circuitlab", "python", "lm_eval"):
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(CLIENT.format(python=sys.executable))
        os.chmod(path, 0o755)


def _run(argv: list[str]) -> int:
    """One request, in the forked child: what the process would have run."""
    import atexit
    import runpy
    import traceback

    from circuitlab.cli import main

    code = 0
    try:
        if argv[0] == "lm_eval":
            from lm_eval.__main__ import cli_evaluate

            sys.argv = argv
            cli_evaluate()
        elif argv[0] != "python":
            sys.argv = ["circuitlab", *argv]
            code = main(argv)
        elif argv[1:3] == ["-m", "circuitlab"]:
            sys.argv = ["circuitlab", *argv[3:]]
            code = main(argv[3:])
        else:
            sys.argv = argv[1:]
            sys.path[0] = os.path.dirname(os.path.abspath(argv[1]))
            runpy.run_path(argv[1], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return code or 0


def serve(path: str) -> None:
    import importlib
    import pkgutil

    import circuitlab

    for module in pkgutil.walk_packages(circuitlab.__path__, "circuitlab."):  # torch, transformers, peft, plotly, ...
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    print("ready", flush=True)
    try:
        while True:
            conn, _ = server.accept()
            _reap(block=False)
            sys.stdout.flush()
            sys.stderr.flush()
            if not os.fork():
                server.close()
                _child(conn)
            conn.close()
    finally:
        _reap(block=True)  # so the children's CPU time is counted as this process's children's (`time make test`)


def _reap(block: bool) -> None:
    try:
        while os.waitpid(-1, 0 if block else os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _child(conn) -> None:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        while chunk := conn.recv(1 << 20):
            data += chunk
        argv, cwd, env = json.loads(data)
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        conn.sendall(str(_run(argv)).encode())
    finally:
        os._exit(0)  # never back into the server's loop


if __name__ == "__main__":
    serve(sys.argv[1])
