"""Model loading: by path like a user's model, safetensors only by default, clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from delift_ray.config import ModelConfig
from delift_ray.errors import DeliftError
from delift_ray.models.load import load_model


def test_loads_by_path_with_limit_and_fingerprint(tiny_model_dir):
    lm = load_model(ModelConfig(path=tiny_model_dir))
    assert not lm.model.training
    assert lm.max_length == 256  # min of max_position_embeddings and tokenizer limit
    assert lm.tokenizer.eos_token_id is not None
    assert lm.fingerprint == load_model(ModelConfig(path=tiny_model_dir)).fingerprint
    assert load_model(ModelConfig(path=tiny_model_dir, max_length=64)).max_length == 64


def test_fingerprint_changes_with_weights(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    lm = load_model(ModelConfig(path=str(copy)))
    with torch.no_grad():
        next(lm.model.parameters()).add_(1.0)
    lm.model.save_pretrained(copy)
    assert load_model(ModelConfig(path=str(copy))).fingerprint != lm.fingerprint


def test_bfloat16_dtype(tiny_model_dir):
    lm = load_model(ModelConfig(path=tiny_model_dir, dtype="bfloat16"))
    assert next(lm.model.parameters()).dtype == torch.bfloat16


def test_pickle_only_weights_refused_unless_allowed(tiny_model_dir, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    lm = load_model(ModelConfig(path=tiny_model_dir))
    for f in pickled.glob("*.safetensors"):
        f.unlink()
    torch.save(lm.model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(DeliftError, match="only pickle weights"):
        load_model(ModelConfig(path=str(pickled)))
    ok = load_model(ModelConfig(path=str(pickled), allow_pickle_weights=True))
    assert ok.model.config.vocab_size == lm.model.config.vocab_size


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nonexistent/model", "model.path does not exist"),
        ("./missing-model", "model.path does not exist"),
        ("some-org/some-model", "cannot load 'some-org/some-model'"),
    ],
)
def test_missing_model_is_one_line(path, message):
    with pytest.raises(DeliftError) as e:
        load_model(ModelConfig(path=path))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(DeliftError, match=r"no config\.json"):
        load_model(ModelConfig(path=str(tmp_path)))
