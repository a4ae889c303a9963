"""Fine-tuning: response-only labels, a short Trainer run on two Ray Train workers that resumes
from its checkpoint after a crash, lowers the loss and reports it to MLflow, and LoRA merged
into a loadable model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import TrainerCallback

import pipelines.train as train_job
from delift_ray.config import ModelConfig, load_config
from delift_ray.data.read import read_examples
from delift_ray.finetune.driver import run_train, subset_path
from delift_ray.finetune.layout import (
    IGNORE,
    Layout,
    collate,
    encode_pairs,
    mean_response_loss,
    response_nll,
)
from delift_ray.finetune.worker import ATTENTION_PROJECTIONS
from delift_ray.models.load import load_model, load_tokenizer

WORDS = ["cat", "dog", "sun", "tree", "milk", "rain", "fog", "sky", "sea", "owl"]
# The fault fires at the start of this epoch: by then the second epoch's report has been queued,
# which Ray allows only once the first epoch's checkpoint was collected.
FAULT_EPOCH = 2


def write_rows(path, words=WORDS):
    kinds = [("Reverse the word.", lambda w: w[::-1]), ("Uppercase it.", str.upper)]
    rows = [{"instruction": t, "input": w, "output": f(w)} for t, f in kinds for w in words]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_cfg(tmp_path, model, pool, *extra):
    return load_config(
        None,
        [
            f"data.path={pool}",
            f"model.path={model}",
            f"output_dir={tmp_path / 'run'}",
            "method=random",
            "train.batch_size=4",
            "train.max_length=64",
            *extra,
        ],
    )


def pairs_of(cfg, model_dir):
    tokenizer = load_tokenizer(ModelConfig(path=str(model_dir)))
    rows = read_examples(cfg.data)
    layout = Layout.of(tokenizer, cfg.templates.add_bos)
    return encode_pairs(tokenizer, layout, rows.xs, rows.ys, 64), tokenizer.pad_token_id


def test_labels_cover_exactly_the_response_and_final_eos(tiny_model_dir):
    tokenizer = load_tokenizer(ModelConfig(path=tiny_model_dir))
    layout = Layout.of(tokenizer, "always")
    x, y = "Instruction: Reverse the word.\nInput: cat\n", " tac"
    x_ids = tokenizer(x, add_special_tokens=False)["input_ids"]
    y_ids = tokenizer(y, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    long, short = encode_pairs(tokenizer, layout, [x, "Hi\n"], [y, " ok"], 64)
    assert long == ([bos, *x_ids, eos, *y_ids, eos], len(x_ids) + 2)
    batch = collate([long, short], tokenizer.pad_token_id)
    labels, ids = batch["labels"], batch["input_ids"]
    n_prompt = len(x_ids) + 2
    assert (labels[0, :n_prompt] == IGNORE).all()
    assert labels[0, n_prompt:].tolist() == [*y_ids, eos]
    short_ids, short_prompt = short
    assert (labels[1, :short_prompt] == IGNORE).all()
    assert labels[1, short_prompt : len(short_ids)].tolist() == short_ids[short_prompt:]
    assert (labels[1, len(short_ids) :] == IGNORE).all()
    assert (ids[1, len(short_ids) :] == tokenizer.pad_token_id).all()
    assert batch["attention_mask"][1].sum() == len(short_ids)
    model = load_model(ModelConfig(path=tiny_model_dir)).model
    with torch.no_grad():
        _, counts = response_nll(model, batch)
    assert counts.tolist() == [len(y_ids) + 1, len(short_ids) - short_prompt]


def test_prompt_is_cut_from_the_left_and_a_response_that_cannot_fit_is_dropped():
    layout = Layout(bos=(1,), eos=2)
    assert layout.pair([10, 11, 12, 13], [20, 21], 7) == ([1, 12, 13, 2, 20, 21, 2], 4)
    assert layout.pair([10], [20, 21], 5) == ([1, 2, 20, 21, 2], 2)
    assert layout.pair([10], [20, 21, 22], 5) is None


def test_subset_path_accepts_a_selection_output_dir(tmp_path):
    sel = tmp_path / "sel"
    sel.mkdir()
    (sel / "subset.jsonl").write_text("")
    cfg = train_cfg(tmp_path, "m", write_rows(tmp_path / "pool.jsonl"), f"train.subset={sel}")
    assert subset_path(cfg.train, cfg.data) == str(sel / "subset.jsonl")
    full = train_cfg(tmp_path, "m", tmp_path / "pool.jsonl")
    assert subset_path(full.train, full.data) == str(tmp_path / "pool.jsonl")


@pytest.mark.timeout(280)
def test_two_workers_killed_once_resume_and_lower_the_response_loss(
    tmp_path, tiny_model_dir, ray_local, monkeypatch
):
    pool = write_rows(tmp_path / "pool.jsonl")
    # A relative model.path, as in the shipped configs: Ray Train workers run in another cwd.
    monkeypatch.chdir(Path(tiny_model_dir).parent)
    relative = Path(tiny_model_dir).name
    # The tracker's settings reach the workers from the driver's environment.
    mlruns = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlruns)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "delift-test")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store needs no server
    extra = ("train.workers=2", "train.epochs=3", "train.lr=0.01", "train.report_to=mlflow")
    cfg = train_cfg(tmp_path, relative, pool, *extra, "train.max_failures=1")
    pairs, pad = pairs_of(cfg, tiny_model_dir)
    before = mean_response_loss(load_model(cfg.model).model, pairs, pad)
    marker = tmp_path / "crashed"
    result = run_train(cfg, callbacks=[KillRank0Once(str(marker))])
    assert marker.exists()
    after = mean_response_loss(
        load_model(ModelConfig(path=str(result.model_dir))).model, pairs, pad
    )
    print(f"response loss on the 20 training rows: {before:.4f} -> {after:.4f}")
    assert after < before - 1.0
    m = json.loads(Path(result.manifest_path).read_text())
    assert m["rows"] == 20 and m["too_long"] == 0 and m["epochs"] == 3
    assert len(m["losses"]) == 3 and m["losses"][-1] < m["losses"][0]
    first, restart = m["attempt_start_epochs"]
    print(f"attempts started at epochs {first} and {restart}; losses {m['losses']}")
    assert first == 0 and restart in (1, 2)  # the gang resumed from a checkpoint
    assert m["training_tokens"] == 3 * sum(len(ids) for ids, _ in pairs)
    assert m["storage_path"] == str(tmp_path / "run" / "train")
    assert m["model_fingerprint"] != m["base_model_fingerprint"]
    assert m["optimizer_steps"] == 3 * 3  # 10 rows per worker in batches of 4, each epoch
    # Each attempt is an MLflow run; between them they logged every epoch's loss.
    client = MlflowClient(mlruns)
    runs = client.search_runs([client.get_experiment_by_name("delift-test").experiment_id])
    assert len(runs) == 2
    logged = {
        x.step: x.value for r in runs for x in client.get_metric_history(r.info.run_id, "loss")
    }
    assert [logged[step] for step in (3, 6, 9)] == pytest.approx(m["losses"])


@pytest.mark.timeout(280)
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_lora_job_entry_point_trains_a_subset_and_saves_a_merged_model(
    tmp_path, tiny_model_dir, ray_local, capsys
):
    pool = write_rows(tmp_path / "pool.jsonl")
    sel = tmp_path / "selection"
    sel.mkdir()
    write_rows(sel / "subset.jsonl", WORDS[:4])
    config = tmp_path / "train.yaml"
    config.write_text(f"data:\n  path: {pool}\nmodel:\n  path: {tiny_model_dir}\nmethod: random\n")
    out = tmp_path / "run"
    overrides = [f"train.subset={sel}", "train.method=lora", "train.lr=0.01", "train.epochs=2"]
    argv = ["--config", str(config), "--set", f"output_dir={out}"]
    assert train_job.main([*argv, *(a for o in overrides for a in ("--set", o))]) == 0
    printed = capsys.readouterr().out
    assert "trained on 8 rows (0 too long) x 2 epochs, lora, 1 workers" in printed
    manifest = json.loads((out / "train_manifest.json").read_text())
    assert manifest["rows"] == 8 and manifest["subset"] == str(sel / "subset.jsonl")
    assert not (out / "model" / "adapter_config.json").exists()
    tuned = load_model(ModelConfig(path=str(out / "model"))).model.state_dict()
    base = load_model(ModelConfig(path=tiny_model_dir)).model.state_dict()
    assert sorted(tuned) == sorted(base)
    changed = [n for n, p in tuned.items() if not torch.equal(p, base[n])]
    assert changed and all(n.rsplit(".", 2)[-2] in ATTENTION_PROJECTIONS for n in changed)


class KillRank0Once(TrainerCallback):
    """The fault: while `marker` is missing, rank 0 dies at the start of FAULT_EPOCH."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = round(state.epoch or 0)
        if args.process_index == 0 and epoch == FAULT_EPOCH and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
