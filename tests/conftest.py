"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real benchmark data, kept beside the repository in ../shared/data."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"benchmark data not found at {path}")
    return path


# Session-wide models are read-only: a test that changes weights or attaches hooks loads its own.
@pytest.fixture(scope="session")
def tiny():
    from circuitlab.models import load_model

    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gqa():
    from circuitlab.models import load_model

    return load_model("tiny-llama-gqa")


@pytest.fixture(scope="session")
def smollm2():
    from circuitlab.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run faster without thread hand-offs, and numerics stay the same."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
