"""Optional packages (the `train` extra): import one, or stop with one line naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from delift_ray.errors import DeliftError


def optional_import(module: str, extra: str, needed_for: str) -> ModuleType:
    """`import module`, or a DeliftError saying which `pip install 'delift-ray[extra]'` adds it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise DeliftError(
            f"{needed_for} needs the {package} package, which is not installed: "
            f"pip install 'delift-ray[{extra}]'"
        ) from None
