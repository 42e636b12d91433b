"""Resolve once: one `locate_task` plans its config once and hashes the model's weights once (issue 36, item 6)."""

import pytest

from circuitlab.locate import LocateConfig, SampleConfig, locate_task
from circuitlab.models import fingerprint, view


@pytest.fixture
def counted(monkeypatch):
    """Calls of `weight_fingerprint` (wherever it is imported) and of `LocateConfig.plan`, each still doing its work."""
    calls = {"fingerprint": 0, "plan": 0}

    def counting(key, real):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)
        return wrapper

    hashing = counting("fingerprint", fingerprint.weight_fingerprint)
    monkeypatch.setattr(fingerprint, "weight_fingerprint", hashing)
    monkeypatch.setattr(view, "weight_fingerprint", hashing)
    monkeypatch.setattr(LocateConfig, "plan", counting("plan", LocateConfig.plan))
    return calls


@pytest.mark.parametrize("config", [LocateConfig(n_per_layer=1),
                                    LocateConfig(n_per_layer=1, protocol="official", plain=True)])
def test_one_locate_task_plans_once_and_hashes_the_weights_once(counted, config, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path / "cache"))  # the score cache: scored, not read back
    circuit = locate_task("tiny-llama", "capitals", sampling=SampleConfig(n=2, max_docs=6), config=config,
                          out=tmp_path / "c.json", progress=False)
    assert counted == {"fingerprint": 1, "plan": 1}
    assert circuit.model.fingerprint and circuit.protocol == config.protocol
