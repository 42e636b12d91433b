"""The `circuitlab` command: a thin layer over the Python API.

Each command has an `add` function (its options, mostly read from the light config dataclasses, so building
the parser imports no torch) and a `run` function: parse -> config -> one library call -> print. Every bad
input is found before any slow work where it can be, and reaches the user as one line on stderr with exit
code 2: argparse's usage errors, `ConfigError` (which names the flag) and `CircuitlabError`. The library is
imported inside `run`, once the options are known to be good: that is what keeps start-up fast.
"""

from __future__ import annotations

import os
import sys

from circuitlab import __version__
from circuitlab.cli import edges, evaluate, finetune, interchange, locate, report, studies, study
from circuitlab.cli.options import Parser
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.core.processes import launched_world

COMMANDS = {**locate.COMMANDS, **evaluate.COMMANDS, **report.COMMANDS, **studies.COMMANDS, **finetune.COMMANDS,
            **edges.COMMANDS, **interchange.COMMANDS, **study.COMMANDS}
SHARED = ("locate", "reproduce", "finetune")  # the commands that share their work between torchrun's processes


def build_parser() -> Parser:
    parser = Parser(prog="circuitlab",
                    description="Locate knowledge circuits in language models and enhance them with HeadMap.")
    parser.add_argument("--version", action="version", version=f"circuitlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


# What transformers, PEFT and torch warn about that a circuitlab user cannot act on: their own deprecations, PEFT's
# look-up of the base model's config on the hub (offline it fails; circuitlab never trains embeddings), and
# transformers' info-level logging. `python -W ...` or PYTHONWARNINGS shows everything again.
QUIET = [("ignore", {"category": FutureWarning}), ("ignore", {"category": DeprecationWarning}),
         ("ignore", {"message": r"Unable to fetch remote file"}), ("ignore", {"message": r"Could not find a config file"})]


def _quiet_libraries() -> None:
    import warnings

    from circuitlab.core.progress import terminal_only_bars

    terminal_only_bars()
    if sys.warnoptions:
        return
    for action, kw in QUIET:
        warnings.filterwarnings(action, **kw)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _close_progress_bars() -> None:
    """Clear every progress bar still open, so the error is the last line the user sees."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.leave = False
        bar.close()


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # a bare `circuitlab`: what it can do
            parser.print_help()
            return 0
        _quiet_libraries()
        if args.command not in SHARED and launched_world() > 1:
            raise CircuitlabError(f"circuitlab {args.command} runs in one process; start it without torchrun "
                                  "(locate, reproduce and finetune share their work between processes)")
        COMMANDS[args.command][1](args)
        sys.stdout.flush()  # here, so a reader that has gone is seen below, not at exit
    except BrokenPipeError:  # `circuitlab tasks | head -3`: the reader took what it wanted; no error, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE, as `cat` or `seq` would be
    except ConfigError as e:
        _close_progress_bars()
        flag = (getattr(args, "_flags", None) or {}).get(e.field, e.field)  # the flag the user typed
        print(f"circuitlab: error: {flag} {e.problem}", file=sys.stderr)
        return 2
    except CircuitlabError as e:
        _close_progress_bars()
        print(f"circuitlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk that fills, a file removed under us: still one line
        _close_progress_bars()
        print(f"circuitlab: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print("circuitlab: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
