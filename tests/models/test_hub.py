"""The hub is asked once whether it answers; offline, loads use the local cache and fail in one line."""

import urllib.error

import pytest

from circuitlab.core.errors import CircuitlabError
from circuitlab.models import hub, load_model, model_config


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    hub._reachable.cache_clear()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    yield
    hub._reachable.cache_clear()


def calls_to_urlopen(monkeypatch, outcome):
    calls = []

    def urlopen(request, timeout):
        calls.append((request.full_url, timeout))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(hub.urllib.request, "urlopen", urlopen)
    return calls


def test_offline_setting_is_read_when_asked_and_skips_the_probe(monkeypatch):
    calls = calls_to_urlopen(monkeypatch, AssertionError("the hub must not be asked"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.local_only() and calls == []


def test_an_unreachable_hub_is_asked_once(monkeypatch):
    calls = calls_to_urlopen(monkeypatch, urllib.error.URLError("no route"))
    assert hub.local_only() and hub.local_only()
    assert len(calls) == 1 and calls[0][1] <= hub.TIMEOUT_S


def test_an_answer_of_any_status_means_reachable(monkeypatch):
    calls_to_urlopen(monkeypatch, urllib.error.HTTPError("https://huggingface.co", 401, "no", {}, None))
    assert not hub.local_only()


@pytest.mark.parametrize("name", ["llama2-7b", "someone/some-model"])
def test_unreachable_hub_model_is_one_line_from_the_cache_alone(monkeypatch, name, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    calls_to_urlopen(monkeypatch, urllib.error.URLError("no route"))
    import transformers

    seen = []
    real = transformers.AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    with pytest.raises(CircuitlabError, match="cannot be reached and it is not in the local cache") as e:
        model_config(name)
    assert seen == [True] and "\n" not in str(e.value)
    with pytest.raises(CircuitlabError, match="not in the local cache"):
        load_model(name)
