"""The benchmark scripts imported by their own names, as they run (`python benchmarks/NAME.py`): scale.py's
all-gather timing spawns processes that import it, and checkpoint.py imports scale.py's shapes."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def scale():
    yield from benchmark("scale")


@pytest.fixture(scope="module")
def checkpoint():
    yield from benchmark("checkpoint")


@pytest.fixture(scope="module")
def eap_library():
    yield from benchmark("eap_library")
