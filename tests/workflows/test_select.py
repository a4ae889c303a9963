"""End to end on a small pool: every stage and method writes correct, consistent outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import rankdata
from transformers import AutoTokenizer

from delift_ray.config import DataConfig, TemplatesConfig, load_config
from delift_ray.data.read import read_examples
from delift_ray.errors import DeliftError
from delift_ray.scoring.stage import drop_unscorable
from delift_ray.scoring.templates import Prompts
from delift_ray.selection.greedy import naive_greedy
from delift_ray.selection.kernels import scale_utilities
from delift_ray.selection.methods import (
    METHODS,
    Draw,
    Kernels,
    Method,
    SentenceEmbeddings,
    run_greedy,
)
from delift_ray.selection.objectives import (
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)
from delift_ray.workflows.compare import Arm, plan
from delift_ray.workflows.select import run_select

KINDS = {
    "Reverse the word.": lambda w: w[::-1],
    "Uppercase the word.": str.upper,
    "Repeat the word twice.": lambda w: f"{w} {w}",
}
WORDS = ["cat", "dog", "sun", "tree", "milk", "rain"]


def rows(words, kinds=KINDS):
    return [
        {"instruction": k, "input": w, "output": f(w), "kind": k.split()[0]}
        for k, f in kinds.items()
        for w in words
    ]


def write_jsonl(path, records, extra_lines=()):
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    pool = rows(WORDS[:4])
    pool_lines = [json.dumps(pool[0]), '{"instruction": "broken', '{"instruction": "x"}']
    return {
        "pool": write_jsonl(tmp_path / "pool.jsonl", pool, pool_lines),
        "target": write_jsonl(tmp_path / "target.jsonl", rows(["rain"])),
        "existing": write_jsonl(tmp_path / "existing.jsonl", rows(["milk"])),
        "records": pool,
    }


def config(tmp_path, files, tiny_model_dir, *overrides):
    return load_config(
        None,
        [
            f"data.path={files['pool']}",
            f"target.path={files['target']}",
            f"existing.path={files['existing']}",
            f"model.path={tiny_model_dir}",
            f"output_dir={tmp_path / 'out'}",
            "budget=4",
            "scoring.executor=local",
            *overrides,
        ],
    )


def kernel_from_file(util, kernel, row_ids, col_ids):
    """Rebuild a dense min-max kernel from utilities.parquet alone."""
    t = util[util["kernel"] == kernel]
    k = np.zeros((len(row_ids), len(col_ids)))
    r = {x: n for n, x in enumerate(row_ids)}
    c = {x: n for n, x in enumerate(col_ids)}
    k[[r[x] for x in t["target_id"]], [c[x] for x in t["demo_id"]]] = scale_utilities(
        t["u"].to_numpy(), "minmax"
    )
    return k


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_instruction_stage_outputs_are_consistent(tmp_path, files, tiny_model_dir, preset):
    result = run_select(
        config(
            tmp_path,
            files,
            tiny_model_dir,
            "selection.optimizer=lazy",
            f"selection.preset={preset}",
        )
    )
    out = Path(result.directory)
    sel = pq.read_table(out / "selection.parquet").to_pandas()
    util = pq.read_table(out / "utilities.parquet").to_pandas()
    rejects = pq.read_table(out / "rejects.parquet").to_pandas()
    manifest = json.loads((out / "manifest.json").read_text())

    n = len(files["records"])
    assert manifest["pool_size"] == n
    assert manifest["counts"]["pool"] == {
        "rows_read": n + 3,
        "usable": n,
        "rejected": 2,
        "duplicates": 1,
    }
    assert sorted(rejects["row"]) == [n + 2, n + 3]
    assert len(util) == n * n
    np.testing.assert_allclose(util["u"], util["d0"] - util["d1"])
    assert ((util["d1"] >= 0) & (util["d1"] <= 1)).all()

    # The selection equals naive greedy on the kernel rebuilt from the stored utilities.
    ids = list(dict.fromkeys(util["target_id"]))
    expected = naive_greedy(facility_location(kernel_from_file(util, "pool", ids, ids)), 4)
    assert list(sel["id"]) == [ids[k] for k in expected.indices]
    np.testing.assert_allclose(sel["gain"], expected.gains, rtol=1e-5)
    np.testing.assert_allclose(sel["objective"], np.cumsum(sel["gain"]), rtol=1e-9)
    assert list(sel["rank"]) == [0, 1, 2, 3]
    assert manifest["objective"] == pytest.approx(sel["objective"].iloc[-1])
    assert manifest["objective"] <= manifest["upper_bound"]
    assert manifest["selection_variant"] == {
        "preset": preset,
        "scaling": "minmax",
        "normalize": "none",
        "sharpen": 1.0,
        "modular": 0.0,
        "eta": 1.0,
        "nu": 1.0,
    }

    # The subset is the original records, in pick order, extra columns kept.
    subset = [json.loads(line) for line in (out / "subset.jsonl").read_text().splitlines()]
    by_id = dict(zip(ids, files["records"]))
    assert subset == [by_id[i] for i in sel["id"]]


def variant_kernel_from_file(util, ids, normalize, sharpen):
    """The pool kernel of a variant, rebuilt densely row by row from utilities.parquet alone."""
    t = util[util["kernel"] == "pool"]
    pos = {x: n for n, x in enumerate(ids)}
    u = np.full((len(ids), len(ids)), np.nan)
    u[[pos[x] for x in t["target_id"]], [pos[x] for x in t["demo_id"]]] = t["u"]
    k = np.zeros_like(u)
    for i, row in enumerate(u):
        if normalize == "row_rank":
            k[i] = (rankdata(row) - 1) / (len(row) - 1)
        elif normalize == "row_z":
            k[i] = np.maximum((row - row.mean()) / row.std(), 0)
    return k**sharpen


@pytest.mark.parametrize(
    ("normalize", "sharpen", "modular"), [("row_rank", 2.0, 0.5), ("row_z", 1.0, 3.0)]
)
def test_variants_select_what_naive_greedy_picks_on_the_rebuilt_kernel(
    tmp_path, files, tiny_model_dir, normalize, sharpen, modular
):
    variant = [
        f"selection.normalize={normalize}",
        f"selection.sharpen={sharpen}",
        f"selection.modular={modular}",
    ]
    result = run_select(config(tmp_path, files, tiny_model_dir, *variant))
    util = pq.read_table(result.files["utilities"]).to_pandas()
    ids = list(dict.fromkeys(util["target_id"]))
    k = variant_kernel_from_file(util, ids, normalize, sharpen)
    n = len(ids)
    means = (k.sum(axis=0) - np.diag(k)) / (n - 1)  # dense: every other target scored each j
    expected = naive_greedy(facility_location(k, weights=modular * means), 4)
    sel = pq.read_table(result.files["selection"]).to_pandas()
    assert list(sel["id"]) == [ids[i] for i in expected.indices]
    np.testing.assert_allclose(sel["gain"], expected.gains, rtol=1e-5)
    assert result.manifest["objective"] == pytest.approx(expected.value, rel=1e-5)
    assert result.manifest["selection_variant"] == {
        "preset": "default",
        "scaling": "minmax",
        "normalize": normalize,
        "sharpen": sharpen,
        "modular": modular,
        "eta": 1.0,
        "nu": 1.0,
    }
    assert result.manifest["config"]["selection"]["normalize"] == normalize


@pytest.mark.parametrize(
    ("stage", "builder", "cross_file"),
    [("task", fl_mutual_information, "target"), ("continual", fl_conditional_gain, "existing")],
)
def test_cross_stages_match_their_objective(
    tmp_path, files, tiny_model_dir, stage, builder, cross_file
):
    result = run_select(config(tmp_path, files, tiny_model_dir, f"stage={stage}"))
    out = Path(result.directory)
    util = pq.read_table(out / "utilities.parquet").to_pandas()
    sel = pq.read_table(out / "selection.parquet").to_pandas()
    ids = list(dict.fromkeys(util[util["kernel"] == "pool"]["target_id"]))
    cross_ids = list(dict.fromkeys(util[util["kernel"] == stage]["demo_id"]))
    assert len(cross_ids) == len(rows(["x"]))
    k = kernel_from_file(util, "pool", ids, ids)
    cross = kernel_from_file(util, stage, ids, cross_ids)
    expected = naive_greedy(builder(k, cross), 4)
    assert list(sel["id"]) == [ids[i] for i in expected.indices]
    assert result.manifest["objective_function"] == {"task": "FLMI", "continual": "FLCG"}[stage]


def test_baselines_random_full_se(tmp_path, files, tiny_model_dir):
    a = run_select(config(tmp_path, files, tiny_model_dir, "method=random", "seed=1"))
    first = pq.read_table(a.files["selection"])["id"].to_pylist()
    b = run_select(config(tmp_path, files, tiny_model_dir, "method=random", "seed=1"))
    assert pq.read_table(b.files["selection"])["id"].to_pylist() == first
    assert len(first) == 4 and len(set(first)) == 4
    assert "utilities" not in a.files

    full = run_select(config(tmp_path, files, tiny_model_dir, "method=full"))
    assert full.manifest["selected"] == len(files["records"])

    se = run_select(config(tmp_path, files, tiny_model_dir, "method=se", "stage=task"))
    assert se.manifest["selected"] == 4
    assert se.manifest["objective"] <= se.manifest["upper_bound"]


def test_too_long_response_is_rejected_not_truncated(tmp_path, files, tiny_model_dir):
    records = files["records"] + [
        {"instruction": "Say a lot.", "input": "", "output": "word " * 200, "kind": "x"}
    ]
    write_jsonl(files["pool"], records)
    result = run_select(config(tmp_path, files, tiny_model_dir, "model.max_length=96"))
    rejects = pq.read_table(result.files["rejects"]).to_pandas()
    assert list(rejects["row"]) == [len(records)]
    assert "response" in rejects["reason"][0]
    assert result.manifest["pool_size"] == len(files["records"])


def test_rerun_is_idempotent_and_budget_checked(tmp_path, files, tiny_model_dir):
    cfg = config(tmp_path, files, tiny_model_dir)
    first = Path(run_select(cfg).files["selection"]).read_bytes()
    assert Path(run_select(cfg).files["selection"]).read_bytes() == first
    with pytest.raises(DeliftError, match="larger than the pool"):
        run_select(config(tmp_path, files, tiny_model_dir, "budget=500"))


def test_unwritable_output_dir_is_a_clear_error(tmp_path, files, tiny_model_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DeliftError, match="output: cannot write to"):
        run_select(config(tmp_path, files, tiny_model_dir, f"output_dir={blocker}/run"))


def test_delift_shuffled_selects_on_permuted_utilities_of_the_same_pairs(
    tmp_path, files, tiny_model_dir
):
    store = f"store.uri={tmp_path / 'store'}"
    real = run_select(config(tmp_path, files, tiny_model_dir, store, f"output_dir={tmp_path}/r"))
    result = run_select(
        config(tmp_path, files, tiny_model_dir, store, "method=delift-shuffled", "seed=3")
    )
    assert result.manifest["kernel"]["pairs_scored"] == 0  # the same pairs, from the store
    util = pq.read_table(Path(result.directory, "utilities.parquet")).to_pandas()
    true = pq.read_table(Path(real.directory, "utilities.parquet")).to_pandas()
    assert util.equals(true)  # the table keeps the true utilities

    # documented: pool-kernel utilities permuted with numpy's default_rng([seed, 0])
    shuffled = util.assign(u=np.random.default_rng([3, 0]).permutation(util["u"].to_numpy()))
    ids = list(dict.fromkeys(util["target_id"]))
    k = kernel_from_file(shuffled, "pool", ids, ids)
    assert not np.allclose(k, kernel_from_file(util, "pool", ids, ids))
    expected = naive_greedy(facility_location(k), 4)
    sel = pq.read_table(result.files["selection"]).to_pandas()
    assert list(sel["id"]) == [ids[i] for i in expected.indices]


def test_quota_shares_the_budget_equally_by_a_field(tmp_path, files, tiny_model_dir):
    cfg = config(tmp_path, files, tiny_model_dir, "method=quota", "selection.quota_by=kind")
    result = run_select(dataclasses.replace(cfg, budget=6))
    subset = [json.loads(line) for line in Path(result.files["subset"]).read_text().splitlines()]
    assert (
        sorted(r["kind"] for r in subset)
        == ["Repeat", "Repeat", "Reverse", "Reverse"] + ["Uppercase"] * 2
    )
    with pytest.raises(DeliftError, match=r"needs selection\.quota_by"):
        config(tmp_path, files, tiny_model_dir, "method=quota")
    bad = config(tmp_path, files, tiny_model_dir, "method=quota", "selection.quota_by=topic")
    with pytest.raises(DeliftError, match="no row of the pool has a field 'topic'"):
        run_select(bad)


def test_drop_unscorable_returns_the_encoding_of_the_rows_it_keeps(files, tiny_model_dir):
    records = files["records"] + [{"instruction": "Say a lot.", "input": "", "output": "w " * 200}]
    write_jsonl(files["pool"], records)
    pool = read_examples(DataConfig(path=str(files["pool"])))
    prompts = Prompts(AutoTokenizer.from_pretrained(tiny_model_dir), TemplatesConfig(), 96)
    kept, enc = drop_unscorable(prompts, pool)
    assert len(kept.examples) == len(records) - 1 and "response" in kept.rejects[-1].reason
    fresh = prompts.encode(kept.xs, kept.ys)
    for name in ("xs", "ys", "plain", "response", "query_len", "demo_len"):
        got, want = getattr(enc, name), getattr(fresh, name)
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_a_new_method_is_one_entry_in_the_table(tmp_path, files, tiny_model_dir, monkeypatch):
    def last_first(req):  # no kernels: the last `budget` rows, the last one first
        n = len(req.pool.examples)
        return Draw(np.arange(n - 1, n - 1 - req.budget, -1, dtype=np.int64))

    def length_kernel(embedder, pool, cross):  # kernels of its own: responses of similar length
        lengths = np.array([len(y) for y in pool.ys], dtype=float)
        return Kernels(pool=1 / (1 + np.abs(lengths[:, None] - lengths[None, :])))

    monkeypatch.setitem(METHODS, "last-first", Method(None, last_first))
    monkeypatch.setitem(METHODS, "by-length", Method(SentenceEmbeddings(length_kernel), run_greedy))

    drawn = run_select(config(tmp_path, files, tiny_model_dir, "method=last-first"))
    ids = pq.read_table(drawn.files["pool_ids"])["id"].to_pylist()
    sel = pq.read_table(drawn.files["selection"]).to_pandas()
    assert list(sel["id"]) == ids[::-1][:4]
    assert sel["gain"].isna().all() and sel["objective"].isna().all()
    m = drawn.manifest
    assert (m["method"], m["optimizer"], m["objective_function"]) == (
        "last-first",
        "last-first",
        None,
    )
    assert (m["objective"], m["upper_bound"], m["kernel"]) == (None, None, None)

    greedy = run_select(config(tmp_path, files, tiny_model_dir, "method=by-length"))
    pool = read_examples(DataConfig(path=str(files["pool"])))
    expected = naive_greedy(facility_location(length_kernel(None, pool, None).pool), 4)
    sel = pq.read_table(greedy.files["selection"]).to_pandas()
    assert list(sel["id"]) == [pool.ids[k] for k in expected.indices]
    np.testing.assert_allclose(sel["gain"], expected.gains, rtol=1e-9)
    assert greedy.manifest["objective_function"] == "FL"
    assert greedy.manifest["optimizer"] == "lazy"

    cfg = config(tmp_path, files, tiny_model_dir, "compare.methods=by-length,last-first")
    assert plan(cfg) == [Arm("by-length", 4), Arm("last-first", 4)]
    with pytest.raises(DeliftError, match=r"method must be one of .*, full, last-first, by-length"):
        config(tmp_path, files, tiny_model_dir, "method=first-last")


def test_delift_paper_ignores_the_variant_keys(tmp_path, files, tiny_model_dir):
    store = f"store.uri={tmp_path / 'store'}"
    plain = run_select(config(tmp_path, files, tiny_model_dir, store, f"output_dir={tmp_path}/d"))
    variant = ["selection.normalize=row_z", "selection.sharpen=3", "selection.modular=2"]
    paper = run_select(
        config(tmp_path, files, tiny_model_dir, store, "method=delift-paper", *variant)
    )
    assert paper.manifest["kernel"]["pairs_scored"] == 0  # delift's utilities, from the store
    assert paper.manifest["selection_variant"]["preset"] == "paper"
    assert paper.manifest["config"]["selection"]["normalize"] == "none"
    same = [pq.read_table(r.files["selection"]).to_pandas() for r in (plain, paper)]
    assert same[0].equals(same[1])  # the paper's DELIFT is the default's while defaults = paper
