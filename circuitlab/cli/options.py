"""Command-line options made from config dataclasses, so defaults, bounds and choices live once.

`add_settings(parser, Config, ...)` adds one option per `setting` field of `Config` (help, default,
`choices=`, type and parser all read from the field) and remembers which flag sets which field;
`build(Config, args)` makes the config from the parsed values. When the config then refuses a value
(`ConfigError(field, ...)`), `main` names the flag the user typed instead of the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.settings import choices_of
from circuitlab.models.config import ModelConfig

PLOTLYJS = ("directory", "inline", "cdn")  # how an HTML figure gets plotly.js (`circuitlab.report.write`)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a CircuitlabError: one line and exit code 2, like every other bad input."""

    def error(self, message: str):
        command = self.prog.removeprefix("circuitlab").strip()  # "" for the top level, which main already names
        raise CircuitlabError(f"{command}: {message}" if command else message)


def _typed(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings(p: argparse.ArgumentParser, cls, names: list[str] | None = None,
                 flags: dict[str, str] | None = None, defaults: dict[str, Any] | None = None) -> None:
    """One option per field of `cls` in `names` (default: all with a help text). `flags` renames an
    option (field -> flag); `defaults` overrides a default for this command only."""
    flags, defaults = flags or {}, defaults or {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    names = names or [n for n, f in known.items() if f.metadata.get("help")]
    mapping = dict(p.get_default("_flags") or {})
    for name in names:
        f = known[name]
        flag = flags.get(name, flag_of(name))
        field_default = f.default if f.default is not dataclasses.MISSING else None
        default = defaults.get(name, field_default)
        help_ = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": name}
        if isinstance(default, bool):
            kwargs.update(action="store_true")
        else:
            parse = f.metadata.get("parse")
            kind = _value_type(cls, name)
            choices = choices_of(f)
            metavar = f.metadata.get("metavar") or (None if choices else flag.lstrip("-").upper().replace("-", "_"))
            kwargs.update(type=_typed(parse) if parse else kind, default=default, choices=choices, metavar=metavar)
            if field_default is not None and field_default != ():
                shown = ",".join(map(str, field_default)) if isinstance(field_default, (tuple, list)) else field_default
                help_ = f"{help_} (default: {shown})" if help_ else f"default: {shown}"
        p.add_argument(flag, help=help_, **kwargs)
        mapping[name] = flag
    p.set_defaults(_flags=mapping)


def _value_type(cls, name: str) -> type:
    """int, float or str: the field's type, `X | None` read as X."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if args[0] in (int, float, str) else str


def name_flags(p: argparse.ArgumentParser, **flags: str) -> None:
    """Say which flag sets a config field the options above do not declare (field=flag), so errors
    about that field name the flag."""
    p.set_defaults(_flags={**(p.get_default("_flags") or {}), **flags})


def build(cls, args: argparse.Namespace, **given):
    """`cls(...)` from the parsed options of its fields that were given (unset ones keep the
    dataclass's default), plus `given` (which win)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return cls(**{**values, **given})


def add_figure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-png", action="store_true", help="write only the HTML files")
    p.add_argument("--plotlyjs", choices=PLOTLYJS, default="directory",
                   help="directory (default): small HTML files reading one plotly.min.js beside them, offline; inline: "
                        "self-contained HTML (~5 MB each); cdn: small HTML that loads plotly.js from its CDN (online)")


def figure_options(args) -> dict:
    return {"png": not args.no_png, "plotlyjs": args.plotlyjs}


def add_progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off when stderr is not "
                                                                  "a terminal)")


def add_data_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir",
                   help="local data laid out like ../shared/data (default: $CIRCUITLAB_DATA, else the hub)")


def add_data_options(p: argparse.ArgumentParser, task_required: bool = True) -> None:
    p.add_argument("--task", required=task_required, help="task name (see `circuitlab tasks`) or a custom .jsonl file")
    add_data_dir_option(p)


MODEL_FIELDS = ["model", "device", "dtype", "device_map", "max_memory"]


def add_model_options(p: argparse.ArgumentParser, processes: bool = False, names: list[str] | None = None) -> None:
    """ModelConfig's options; `processes` for the commands that share their work between torchrun's processes."""
    add_settings(p, ModelConfig, (names or MODEL_FIELDS) + (["processes"] if processes else []))


def given(args: argparse.Namespace, *names: str) -> bool:
    """Whether any of these options was given (their parser defaults are None)."""
    return any(getattr(args, n, None) is not None for n in names)


def note(line: str) -> None:
    """What a job tells the user on the way (stderr, so stdout holds only results)."""
    print(line, file=sys.stderr)
