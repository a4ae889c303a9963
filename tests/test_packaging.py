"""The wheel: one top-level package (delift_ray) with every subpackage, py.typed, the shipped
configs and demo data, and job entry points that run from the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the working tree with the venv's setuptools (no network)."""
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True,
        timeout=240,
        cwd=build,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    (found,) = out.glob("delift_ray-*.whl")
    return found


def test_wheel_installs_delift_ray_only_with_every_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"delift_ray"}
    library = {
        str(p.parent.relative_to(REPO)).replace("/", ".")
        for p in (REPO / "delift_ray").rglob("__init__.py")
    }
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("__init__.py")}
    assert library | {"delift_ray.pipelines"} == shipped
    assert "delift_ray/py.typed" in names
    configs = {p.name for p in (REPO / "pipelines" / "configs").glob("*.yaml")}
    demo = {p.name for p in (REPO / "pipelines" / "data").glob("*.jsonl")}
    assert {f"delift_ray/pipelines/configs/{c}" for c in configs} <= set(names)
    assert {f"delift_ray/pipelines/data/{d}" for d in demo} <= set(names)
    jobs = {p.stem for p in (REPO / "pipelines").glob("*.py")} - {"__init__", "make_demo_data"}
    assert {f"delift_ray/pipelines/{j}.py" for j in jobs} <= set(names)


def test_job_entry_point_runs_from_the_installed_package(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True,
        timeout=240,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    code = "import delift_ray, sys; print(delift_ray.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert where.stdout.strip().startswith(str(target)), where.stderr
    config = target / "delift_ray" / "pipelines" / "configs" / "instruction.yaml"
    job = subprocess.run(
        [sys.executable, "-m", "delift_ray.pipelines.select", "--config", str(config),
         "--set", "method=random", "--set", f"output_dir={tmp_path / 'out'}",
         "--set", f"data.path={target / 'delift_ray' / 'pipelines' / 'data' / 'demo_pool.jsonl'}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    assert "with method=random" in job.stdout
    assert (tmp_path / "out" / "selection.parquet").is_file()
