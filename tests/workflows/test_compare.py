"""The comparison: a tiny end-to-end compare (select -> fine-tune -> evaluate per method and seed),
its tables and plots, reuse of finished sub-runs, and the compare config keys."""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics

import numpy as np
import pyarrow.parquet as pq
import pytest

import pipelines.compare as compare_job
from delift_ray.config import config_to_dict, load_config
from delift_ray.errors import DeliftError
from delift_ray.selection.greedy import naive_greedy
from delift_ray.selection.kernels import scale_utilities
from delift_ray.selection.objectives import facility_location
from delift_ray.workflows.compare import (
    METRICS,
    Arm,
    absolute_paths,
    arm_seeds,
    eval_config,
    plan,
    reusable,
    run_compare,
    select_config,
    train_config,
)
from delift_ray.workflows.select import run_select

WORDS = ["cat", "dog", "sun", "tree", "milk", "rain", "fog", "sky", "sea", "owl"]
KINDS = {"Reverse the word.": ("reverse", lambda w: w[::-1]), "Uppercase it.": ("upper", str.upper)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_rows(path, words):
    rows = [
        {"instruction": t, "input": w, "output": f(w), "kind": kind}
        for t, (kind, f) in KINDS.items()
        for w in words
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(tmp_path, model):
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    test = write_rows(tmp_path / "test.jsonl", ["ant", "bee"])
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"data: {{path: {pool}}}\nmodel: {{path: {model}}}\nbudget: 0.3\n"
        "scoring: {executor: local}\n"
        "train: {epochs: 1, batch_size: 4, max_length: 64, lr: 0.01}\n"
        f"eval: {{test: {{path: {test}}}, executor: local, max_new_tokens: 4, batch_size: 4}}\n"
        "compare: {methods: 'random,delift,full'}\n"
        f"output_dir: {tmp_path / 'cmp'}\n"
    )
    return config


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def num(cell):
    return float(cell) if cell else float("nan")


def final_files(out):
    patterns = ("*/select/manifest.json", "*/seed*/train_manifest.json", "*/seed*/eval/eval.json")
    return {p: p.stat().st_mtime_ns for pattern in patterns for p in sorted(out.glob(pattern))}


def table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def check_markdown_matches_csv(out, table):
    md = (out / "comparison.md").read_text()
    lines = [line.strip("|").split("|") for line in md.splitlines() if line.startswith("| ")]
    header, body = [c.strip() for c in lines[0]], lines[1:]
    assert header[:4] == ["method", "budget", "runs", "rows"] and len(body) == len(table)
    for cells, row in zip(body, table, strict=True):
        cell = dict(zip(header, (c.strip() for c in cells), strict=True))
        assert cell["method"] == row["method"] and cell["runs"] == row["runs"]
        assert cell["rows"] == f"{num(row['selected']):,.0f}"
        assert cell["training tokens"] == f"{num(row['training_tokens']):,.0f}"
        for m, title in METRICS.items():  # "mean ± std" to 4 decimals, the mean alone for one run
            shown = [float(x) for x in cell[title].split(" ± ")]
            std = [num(row[f"{m}_std"])] if row[f"{m}_std"] else []
            assert shown == pytest.approx([num(row[m]), *std], abs=5e-5)
    return md


@pytest.mark.timeout(400)
def test_compare_tabulates_every_method_and_reuses_finished_sub_runs(
    tmp_path, tiny_model_dir, ray_local, capsys
):
    config = write_config(tmp_path, tiny_model_dir)
    out = tmp_path / "cmp"
    result = run_compare(load_config(config))
    assert dict(result.ran) == {"select": 3, "train": 3, "eval": 3}
    table = read_csv(out / "comparison.csv")
    assert [r["method"] for r in table] == ["random", "delift", "full"]
    assert [int(num(r["selected"])) for r in table] == [6, 6, 20]
    assert all(r[m] != "" and r[f"{m}_std"] == "" for r in table for m in METRICS)
    assert all(num(r["training_tokens"]) > 0 and num(r["wall_s"]) > 0 for r in table)
    assert num(table[2]["training_tokens"]) > 3 * num(table[0]["training_tokens"])
    md = check_markdown_matches_csv(out, table)
    for name in ("metrics.png", "gain_curve.png", "composition.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"]({name})" in md

    # A second seed for full data: seed 0's sub-runs are reused, only seed 1 runs; the job entry
    # point prints the table, whose mean and std are those of the two per-seed rows.
    before = final_files(out)
    capsys.readouterr()
    two_seeds = ["--set", "compare.methods=full", "--set", "compare.seeds=2"]
    assert compare_job.main(["--config", str(config), *two_seeds]) == 0
    printed = capsys.readouterr().out
    assert "2 of 5 sub-runs ran (0 select, 1 train, 1 eval), 3 reused" in printed
    after = final_files(out)
    assert {p: t for p, t in after.items() if p in before} == before and len(after) == 11
    table = read_csv(out / "comparison.csv")
    runs = read_csv(out / "runs.csv")
    assert [r["method"] for r in table] == ["full"] and table[0]["runs"] == "2"
    assert [r["seed"] for r in runs] == ["0", "1"]
    for m in METRICS:
        values = [num(r[m]) for r in runs]
        assert num(table[0][m]) == pytest.approx(statistics.mean(values))
        assert num(table[0][f"{m}_std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
    wall = [num(r["select_s"]) + num(r["train_s"]) + num(r["eval_s"]) for r in runs]
    assert num(table[0]["wall_s"]) == pytest.approx(statistics.mean(wall), abs=1e-2)
    check_markdown_matches_csv(out, table)
    md = (out / "comparison.md").read_text()
    assert table_lines(printed) == table_lines(md) and " ± " in md
    assert not (out / "gain_curve.png").exists()  # no method with gains this time

    # The same command again runs nothing.
    assert compare_job.main(["--config", str(config), *two_seeds]) == 0
    assert "0 of 5 sub-runs ran (0 select, 0 train, 0 eval), 5 reused" in capsys.readouterr().out
    assert final_files(out) == after


def test_plan_sub_run_configs_and_reuse(tmp_path):
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    cfg = load_config(
        None,
        [
            f"data.path={pool}",
            "model.path=m",
            f"output_dir={tmp_path}",
            "seed=5",
            "compare.methods=random,se,quota,full",
            "selection.quota_by=kind",
            "compare.random_subsets=2",
            "compare.budgets=0.1,4",
        ],
    )
    assert plan(cfg) == [
        Arm("random", 0.1, 5),
        Arm("random", 0.1, 6),
        Arm("random", 4, 5),
        Arm("random", 4, 6),
        Arm("se", 0.1),
        Arm("se", 4),
        Arm("quota", 0.1, 5),
        Arm("quota", 0.1, 6),
        Arm("quota", 4, 5),
        Arm("quota", 4, 6),
        Arm("full", 1.0),
    ]
    assert arm_seeds(cfg, Arm("random", 4, 6), [0, 1, 2]) == [0, 1, 2]
    one = dataclasses.replace(cfg, compare=dataclasses.replace(cfg.compare, draw_seeds="one"))
    assert [arm_seeds(one, Arm("quota", 4, d), [0, 1, 2]) for d in (5, 6, 7, 8)] == [
        [0],
        [1],
        [2],
        [0],
    ]
    assert arm_seeds(one, Arm("se", 4), [0, 1, 2]) == [0, 1, 2]
    sel = select_config(cfg, Arm("random", 4, 6))
    assert (sel.method, sel.budget, sel.seed) == ("random", 4, 6)
    assert sel.output_dir == str(tmp_path / "random-b4-r6" / "select")
    assert sel.store.uri == str(tmp_path / "store")
    tr = train_config(sel, 3)
    assert tr.output_dir == str(tmp_path / "random-b4-r6" / "seed3")
    assert (tr.train.subset, tr.train.seed) == (sel.output_dir, 3)
    assert (tr.train.epochs, tr.train.lr) == (cfg.train.epochs, cfg.train.lr)

    # a budget's own recipe: epochs and lr per budget, the rest of train as configured
    per = dataclasses.replace(
        cfg.compare, epochs_by_budget="0.1=7, 4=3, 1.0=2", lr_by_budget="4=0.01"
    )
    assert [per.recipe(b) for b in (0.1, 4, 1.0, 0.5)] == [
        {"epochs": 7},
        {"epochs": 3, "lr": 0.01},
        {"epochs": 2},
        {},
    ]
    tuned = train_config(sel, 3, per.recipe(4))
    assert (tuned.train.epochs, tuned.train.lr, tuned.train.seed) == (3, 0.01, 3)
    assert tuned.train.batch_size == cfg.train.batch_size
    ev = eval_config(tr)
    assert ev.eval.model_path == str(tmp_path / "random-b4-r6" / "seed3" / "model")

    # A record is reused only for the same config, up to sections the stage does not read; a
    # key added to the config since counts as its default, a key it lost is ignored.
    (tmp_path / "random-b4-r6" / "select").mkdir(parents=True)
    record = {"config": json.loads(json.dumps(config_to_dict(sel), default=str))}
    del record["config"]["pairs"]["k"]
    record["config"]["scoring"]["gone"] = 1
    (tmp_path / "random-b4-r6" / "select" / "manifest.json").write_text(json.dumps(record))
    assert reusable(sel, "select") == record
    assert reusable(dataclasses.replace(sel, train=tr.train), "select") == record
    assert reusable(dataclasses.replace(sel, budget=5), "select") is None
    assert (
        reusable(dataclasses.replace(sel, pairs=dataclasses.replace(sel.pairs, k=3)), "select")
        is None
    )
    assert reusable(tr, "train") is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("compare.methods=random,best", "compare.methods has unknown method 'best'"),
        ("compare.methods=se,se", "compare.methods lists an item twice"),
        ("compare.seeds=0", "compare.seeds must be >= 1"),
        ("compare.seeds=1,x", "compare.seeds has a bad number 'x'"),
        ("compare.seeds=0,1.5", "compare.seeds must be integers >= 0"),
        ("compare.budgets=0.3,1.5", "compare.budgets must be fractions in"),
        ("compare.random_subsets=0", "compare.random_subsets must be >= 1"),
        ("compare.epochs_by_budget=0.1=2.5", "epochs_by_budget must give integers >= 1"),
        ("compare.epochs_by_budget=0.1-3", "epochs_by_budget items must be budget=value"),
        ("compare.epochs_by_budget=0.1=3,0.10=4", "epochs_by_budget lists budget 0.10 twice"),
        ("compare.lr_by_budget=0.3=0", "lr_by_budget must give learning rates > 0"),
        (
            "compare.pair_modes=knn,sparse",
            "compare.pair_modes must be one of dense, knn; got 'sparse'",
        ),
        ("compare.pair_modes=knn,knn", "compare.pair_modes lists an item twice"),
    ],
)
def test_bad_compare_keys_are_named(tmp_path, override, message):
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    with pytest.raises(DeliftError, match=message):
        load_config(None, [f"data.path={pool}", "model.path=m", override])


def test_recipes_by_budget_read_from_overrides(tmp_path):
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    base = [f"data.path={pool}", "model.path=m"]
    one = load_config(None, [*base, "compare.epochs_by_budget=4=3"]).compare
    assert one.recipe(4) == {"epochs": 3}
    two = load_config(None, [*base, "compare.lr_by_budget=0.1=0.003,1.0=1e-3"]).compare
    assert two.recipe(0.1) == {"lr": 0.003} and two.recipe(1.0) == {"lr": 0.001}


def test_seeds_are_a_count_from_train_seed_or_a_list(tmp_path):
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    base = [f"data.path={pool}", "model.path=m", "train.seed=4"]
    assert load_config(None, [*base, "compare.seeds=3"]).compare.seed_list(4) == [4, 5, 6]
    assert load_config(None, [*base, "compare.seeds=7,2"]).compare.seed_list(4) == [7, 2]
    assert load_config(None, [*base, "compare.seeds='9'"]).compare.seed_list(4) == [9]


def test_pair_modes_plan_one_arm_per_mode_for_utility_methods(tmp_path):
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    base = [f"data.path={pool}", "model.path=m", f"output_dir={tmp_path}"]
    cfg = load_config(
        None,
        [
            *base,
            "compare.methods=random,delift,delift-paper,delift-shuffled,se,full",
            "compare.pair_modes=knn,dense",
            "selection.normalize=row_rank",
            "selection.modular=0.5",
        ],
    )
    assert plan(cfg) == [
        Arm("random", 0.3, 0),
        Arm("delift", 0.3, None, "knn"),
        Arm("delift", 0.3, None, "dense"),
        Arm("delift-paper", 0.3, None, "knn"),
        Arm("delift-paper", 0.3, None, "dense"),
        Arm("delift-shuffled", 0.3, None, "knn"),
        Arm("delift-shuffled", 0.3, None, "dense"),
        Arm("se", 0.3),
        Arm("full", 1.0),
    ]
    paper = select_config(cfg, Arm("delift-paper", 0.3, None, "knn"))
    assert paper.output_dir == str(tmp_path / "delift-paper@knn-b0.3" / "select")
    assert paper.pairs.mode == "knn"
    assert paper.selection.variant() == {
        "preset": "paper",
        **{"scaling": "minmax", "normalize": "none", "sharpen": 1.0, "modular": 0.0},
        **{"eta": 1.0, "nu": 1.0},
    }
    mine = select_config(cfg, Arm("delift", 0.3, None, "dense"))
    assert (mine.pairs.mode, mine.selection.normalize, mine.selection.modular) == (
        "dense",
        "row_rank",
        0.5,
    )
    assert Arm.of_label("delift@dense", 0.3).name == "delift@dense-b0.3"
    assert Arm.of_label("delift", 0.3).name == "delift-b0.3"

    # one listed mode replaces pairs.mode, without a label; none keeps pairs.mode
    one = load_config(None, [*base, "compare.methods=delift", "compare.pair_modes=knn"])
    assert plan(one) == [Arm("delift", 0.3)]
    assert select_config(one, Arm("delift", 0.3)).pairs.mode == "knn"
    plain = load_config(None, [*base, "compare.methods=delift"])
    assert select_config(plain, Arm("delift", 0.3)).pairs.mode == "dense"


VARIANT = [
    "pairs.k=3",
    "pairs.embedder=self",
    "selection.normalize=row_rank",
    "selection.sharpen=2",
]


def test_arms_of_both_modes_and_presets_share_one_store_scoring_each_pair_once(
    tmp_path, tiny_model_dir
):
    """The selections of delift and delift-paper in kNN and dense mode, as compare runs them."""
    config = write_config(tmp_path, tiny_model_dir)
    modes = ["compare.methods=delift,delift-paper", "compare.pair_modes=knn,dense"]
    cfg = absolute_paths(load_config(config, [*modes, *VARIANT]))
    arms = plan(cfg)
    labels = ["delift@knn", "delift@dense", "delift-paper@knn", "delift-paper@dense"]
    assert [a.label for a in arms] == labels
    outputs = {a.label: run_select(select_config(cfg, a)) for a in arms}
    manifests = {label: o.manifest for label, o in outputs.items()}
    n = 2 * len(WORDS)
    kernel = {k: m["kernel"] for k, m in manifests.items()}
    # dense scores only what kNN did not; the paper arms score nothing: one store, each pair once
    knn_pairs = kernel["delift@knn"]["pairs_scored"]
    assert 0 < knn_pairs < n * n
    assert kernel["delift@dense"]["pairs_scored"] == n * n - knn_pairs
    assert kernel["delift@dense"]["pairs_in_store"] == knn_pairs
    assert kernel["delift-paper@knn"]["pairs_scored"] == 0
    assert kernel["delift-paper@dense"]["pairs_scored"] == 0
    for label, m in manifests.items():
        assert m["config"]["pairs"]["mode"] == label.split("@")[1]
        variant = m["selection_variant"]
        want = ("paper", "none", 1.0) if "paper" in label else ("default", "row_rank", 2.0)
        assert (variant["preset"], variant["normalize"], variant["sharpen"]) == want
    # the paper's dense selection is naive greedy on the globally min-maxed kernel
    util = pq.read_table(outputs["delift-paper@dense"].files["utilities"]).to_pandas()
    ids = list(dict.fromkeys(util["target_id"]))
    pos = {x: k for k, x in enumerate(ids)}
    k = np.zeros((n, n))
    k[[pos[x] for x in util["target_id"]], [pos[x] for x in util["demo_id"]]] = scale_utilities(
        util["u"].to_numpy(), "minmax"
    )
    expected = naive_greedy(facility_location(k), 6)
    sel = pq.read_table(outputs["delift-paper@dense"].files["selection"]).to_pandas()
    assert list(sel["id"]) == [ids[j] for j in expected.indices]


@pytest.mark.timeout(300)
def test_compare_runs_each_listed_pair_mode_labelled(tmp_path, tiny_model_dir, ray_local):
    config = write_config(tmp_path, tiny_model_dir)
    out = tmp_path / "cmp"
    modes = ["compare.methods=delift-paper", "compare.pair_modes=knn,dense"]
    result = run_compare(load_config(config, [*modes, *VARIANT]))
    assert dict(result.ran) == {"select": 2, "train": 2, "eval": 2}
    labels = ["delift-paper@knn", "delift-paper@dense"]
    assert [r["method"] for r in read_csv(out / "comparison.csv")] == labels
    assert [r["method"] for r in read_csv(out / "runs.csv")] == labels
    for label in labels:
        assert (out / f"{label}-b0.3" / "seed0" / "eval" / "eval.json").is_file()
    md = (out / "comparison.md").read_text()
    assert all(f"| {label} |" in md for label in labels)
    assert "Selection variant of the utility methods: preset default, scaling minmax, " in md
    assert "normalize row_rank, sharpen 2.0, modular 0.0, eta 1.0, nu 1.0" in md
