"""The Hugging Face hub, asked at most once per process whether it can be reached.

Without this, a machine with no network spends most of a minute in huggingface_hub's retries (with
a screen of warnings) before the one-line error. Here: `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`),
read when asked, not when a library was imported, means offline; otherwise one HTTP request to the
hub's endpoint with a short timeout decides. Offline, loads use the local cache only
(`local_files_only=True`), which fails at once when the files are not there.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from functools import lru_cache

from circuitlab.core.errors import CircuitlabError

TIMEOUT_S = 3.0
TRUE = {"1", "ON", "YES", "TRUE"}


FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# what huggingface_hub and PEFT parse as a boolean (PEFT raises on anything else, e.g. an empty HF_HUB_OFFLINE=,
# at the first checkpoint it saves)
BOOLEAN = {"1", "ON", "YES", "TRUE", "Y", "T", "0", "OFF", "NO", "FALSE", "N", "F"}


def check_env_flags() -> None:
    """Refuse, in one line and before any work, a hub flag in the environment that the libraries below would
    fail on later (`HF_HUB_OFFLINE=` set but empty: PEFT raises when it saves the first checkpoint)."""
    for v in FLAGS:
        value = os.environ.get(v)
        if value is not None and value.upper() not in BOOLEAN:
            raise CircuitlabError(f"{v}={value!r} in the environment is neither true (1, ON, YES, TRUE) nor false "
                                  f"(0, OFF, NO, FALSE): set it to one of those, or unset it")


def offline_by_env() -> bool:
    check_env_flags()
    return any(os.environ.get(v, "").upper() in TRUE for v in FLAGS)


@lru_cache(maxsize=None)
def _reachable(endpoint: str) -> bool:
    """One HEAD request, in a thread given TIMEOUT_S in all: the socket timeout does not bound the
    DNS lookup, a join does."""
    answered = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=TIMEOUT_S).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # it answered
        except (OSError, ValueError):
            answered.append(False)

    probe = threading.Thread(target=ask, daemon=True)
    probe.start()
    probe.join(TIMEOUT_S)
    return bool(answered and answered[0])


def local_only() -> bool:
    """Whether hub loads must use the local cache only (offline by setting, or the hub unreachable)."""
    return offline_by_env() or not _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def cache_only_for_datasets() -> bool:
    """When the hub is out of reach, switch `datasets` (and the huggingface_hub calls it makes) to
    their offline mode for this process, so a load fails at once from the cache; returns whether it did."""
    if not local_only():
        return False
    import datasets
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    return True


def hub_error(what: str, error: Exception, local: bool) -> CircuitlabError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if local:
        why = "HF_HUB_OFFLINE is set" if offline_by_env() else "the Hugging Face hub cannot be reached"
        return CircuitlabError(f"cannot load {what}: {why} and it is not in the local cache")
    return CircuitlabError(f"cannot load {what}: {first}")
