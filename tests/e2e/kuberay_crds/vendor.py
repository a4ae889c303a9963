"""Refresh one tag's folder here from the official KubeRay repository, ray-project/kuberay:

    git -C kuberay checkout v1.6.0
    python tests/e2e/kuberay_crds/vendor.py v1.6.0 kuberay/helm-chart/kuberay-operator

reads the chart's crds/ray.io_<plural>.yaml and writes <tag>/<plural>.v1.schema.json.gz: the
served v1 version's openAPIV3Schema as compact JSON with sorted keys, gzip-compressed with a zero
mtime (the same input gives the same bytes), and copies the chart's values.yaml as is.
RayService is left out (no manifest is one).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def schema_of(crd: dict) -> dict:
    """The v1 version's openAPIV3Schema of a CustomResourceDefinition."""
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["served"], f"{crd['spec']['names']['kind']}: v1 is not served"
    return v1["schema"]["openAPIV3Schema"]


def vendor(tag: str, chart: Path) -> None:
    out = HERE / tag
    out.mkdir(exist_ok=True)
    for path in sorted((chart / "crds").glob("ray.io_*.yaml")):
        plural = path.stem.removeprefix("ray.io_")
        if plural == "rayservices":
            continue
        schema = schema_of(yaml.safe_load(path.read_text(encoding="utf-8")))
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        (out / f"{plural}.v1.schema.json.gz").write_bytes(
            gzip.compress(text.encode(), compresslevel=9, mtime=0)
        )
    shutil.copyfile(chart / "values.yaml", out / "values.yaml")


if __name__ == "__main__":
    vendor(sys.argv[1], Path(sys.argv[2]))
