"""Package faces (`circuitlab.core.lazy`): every exported name resolves, and none is shadowed by a submodule of
the same name (an imported submodule becomes an attribute of its package and would win over the face)."""

import importlib
import pkgutil

import pytest

import circuitlab

FACES = ["circuitlab", *sorted(m.name for m in pkgutil.walk_packages(circuitlab.__path__, "circuitlab.") if m.ispkg)]


@pytest.mark.parametrize("face", FACES)
def test_every_exported_name_resolves_and_none_is_a_submodule(face):
    package = importlib.import_module(face)
    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    names = package.__dir__() if callable(getattr(package, "__dir__", None)) and "__dir__" in vars(package) else []
    assert not set(names) & submodules, f"{face} exports names of its own submodules: {set(names) & submodules}"
    for name in names:
        assert getattr(package, name) is not None, f"{face}.{name}"
