"""Optional packages: a missing one stops with one line naming the extra, through each user."""

from __future__ import annotations

import sys

import pytest

from delift_ray.errors import DeliftError
from delift_ray.extras import optional_import
from delift_ray.finetune.evaluate import rouge_f
from delift_ray.workflows.compare_plots import metric_bars


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(DeliftError) as e:
        optional_import("peft", "train", "train.method: lora")
    assert str(e.value) == (
        "train.method: lora needs the peft package, which is not installed: "
        "pip install 'delift-ray[train]'"
    )
    assert optional_import("json", "train", "x").__name__ == "json"


def test_rouge_and_plots_without_their_packages(monkeypatch, tmp_path) -> None:
    assert rouge_f(["a b"], ["a b"])["rouge1"] == [1.0]  # installed here: the real scores
    for name in ("rouge_score", "rouge_score.rouge_scorer"):  # imported by the call above
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(DeliftError, match=r"evaluation's ROUGE needs the rouge_score package"):
        rouge_f(["a"], ["a"])
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(DeliftError, match=r"the comparison's plots needs the matplotlib package"):
        metric_bars(["m"], {"em": [0.5]}, {"em": [0.1]}, tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()
