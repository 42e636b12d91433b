"""What produced a result: the package versions every result file records."""

from __future__ import annotations

import importlib.metadata
import platform

PACKAGES = ("circuitlab", "torch", "transformers", "transformer-lens", "peft", "accelerate")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
