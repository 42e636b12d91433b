"""Package faces that import a module only when one of its names is first used (PEP 562).

`from circuitlab.locate import LocateConfig` then reads the light config module alone, while
`from circuitlab.locate import locate_task` brings in the engine, torch and TransformerLens: the CLI reads
every command's options without importing torch, and the Python API keeps one short import per name.
"""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`, whose public `names` map to the submodule defining each."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{names[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__


def load(target: str):
    """The object a "package.module:name" string names, imported now (registries that must stay light)."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)
