"""The selection core (delift_ray.selection, delift_ray.progress) runs without Ray or torch:
importing every module and running RandGreeDi loads neither, nor delift_ray.distributed."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import importlib, json, pkgutil, sys
import numpy as np
import delift_ray.progress
import delift_ray.selection as core
for m in pkgutil.iter_modules(core.__path__):
    importlib.import_module(f"delift_ray.selection.{m.name}")
from delift_ray.selection.objectives import facility_location
from delift_ray.selection.randgreedi import select
kernel = np.random.default_rng(0).random((60, 60))
sel = select(facility_location(kernel), 5, [str(j) for j in range(60)], mode="randgreedi", parts=3)
loaded = [m for m in sys.modules if m.split(".")[0] in ("ray", "torch")]
loaded += [m for m in sys.modules if m.startswith("delift_ray.distributed")]
print(json.dumps({"picks": len(sel.indices), "loaded": sorted(loaded)}))
"""


def test_the_selection_core_imports_and_runs_without_ray_or_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"picks": 5, "loaded": []}
