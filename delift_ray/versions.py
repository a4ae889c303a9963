"""The installed versions every run records in its manifest."""

from __future__ import annotations

import platform
from importlib import metadata

VERSIONED = ("delift-ray", "torch", "transformers", "ray", "numpy", "scipy", "pyarrow")


def package_versions() -> dict[str, str]:
    """Python's and the installed versions of the packages that shape a result."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
