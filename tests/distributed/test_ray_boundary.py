"""Ray stays in one package: no library module outside delift_ray/distributed/ imports it."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "delift_ray"
IMPORTS_RAY = re.compile(r"^\s*(?:import|from)\s+ray\b", re.MULTILINE)


def test_only_the_distributed_package_imports_ray() -> None:
    importers = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if IMPORTS_RAY.search(p.read_text(encoding="utf-8"))
    }
    assert importers, "the scan found no Ray import at all"
    assert {p for p in importers if not p.startswith("distributed/")} == set()
