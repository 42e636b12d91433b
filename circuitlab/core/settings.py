"""Config fields that carry their own check, help text and choices.

A config is a dataclass whose fields are declared with `setting(...)`; its `__post_init__` calls
`check_settings(self)`. The CLI builds its options from the same fields (`circuitlab.cli.options`),
so a default, a choice list or a lower bound is written exactly once, here in the library.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from circuitlab.core.errors import ConfigError


def setting(default: Any = None, help: str = "", *, minimum: float | None = None,
            choices: Iterable[str] | Callable[[], Iterable[str]] | None = None,
            parse: Callable[[str], Any] | None = None, metavar: str | None = None,
            default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with a help text and, optionally, a lower bound, allowed values, and a parser
    for its command-line text (`parse`, e.g. "0,1,2" -> (0, 1, 2))."""
    metadata = {"help": help, "minimum": minimum, "choices": choices, "parse": parse, "metavar": metavar}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    c = f.metadata.get("choices")
    return tuple(c() if callable(c) else c) if c is not None else None


def check_settings(config) -> None:
    """Every `setting` field of `config` within its bound and among its choices (None = unset)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or not f.metadata:
            continue
        allowed = choices_of(f)
        if allowed is not None and value not in allowed:
            raise ConfigError(f.name, f"must be one of {', '.join(allowed)}; got {value!r}")
        low = f.metadata.get("minimum")
        if low is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f.name, f"must be a number, got {value!r}")
            if value < low:
                what = "a positive integer" if low == 1 and isinstance(value, int) else f"at least {low}"
                raise ConfigError(f.name, f"must be {what}, got {value}")


def int_or_auto(text: str) -> int | str:
    """"auto" or an integer."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"must be an integer or auto, got {text!r}") from None


def check_int_or_auto(config, name: str) -> None:
    value = getattr(config, name)
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(name, f"must be a positive integer or auto, got {value!r}")


def int_list(text: str) -> tuple[int, ...]:
    """"0,1,2" -> (0, 1, 2)."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"must be comma-separated integers, got {text!r}") from None
    return values
