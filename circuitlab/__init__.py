"""circuitlab: locate knowledge circuits in language models and enhance them with HeadMap."""

__version__ = "0.1.0"

import importlib
import importlib.abc
import importlib.util
import sys

from circuitlab.errors import CircuitlabError

__all__ = ["CircuitlabError", "__version__"]


class _RegisterWithPeft(importlib.abc.MetaPathFinder):
    """Registers HeadMap with PEFT right after PEFT is imported.

    `import circuitlab` must make `peft.PeftModel.from_pretrained` understand a HeadMap adapter
    directory, but importing peft takes seconds and most of circuitlab (the CLI's start) never needs
    it. So this finder waits for `import peft`: it hands back the spec the other finders make, with
    a loader that, once it has run peft, imports `circuitlab.headmap` (whose import registers the
    method) and takes this finder off `sys.meta_path`. A mere lookup (`importlib.util.find_spec`,
    as libraries probe for peft) gets the same spec, never runs the loader, and changes nothing.
    """

    _looking = False  # re-entry guard: our own lookup below walks sys.meta_path, this finder included

    def find_spec(self, name, path=None, target=None):
        if name != "peft" or self._looking:
            return None
        self._looking = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._looking = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_headmap()

        spec.loader.exec_module = exec_then_register
        return spec


def _register_headmap() -> None:
    # A partly imported circuitlab.headmap is the one importing peft right now; it registers at its end.
    if "circuitlab.headmap" not in sys.modules:
        importlib.import_module("circuitlab.headmap")


if "peft" in sys.modules:
    _register_headmap()
elif not any(isinstance(f, _RegisterWithPeft) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithPeft())
