"""Shared fixtures: offline environment and a tiny model saved to disk and loaded by path."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Fake S3 credentials for the moto_server tests (tests/s3server.py; it accepts any), set before
# any local Ray starts so that its workers inherit them as users' workers would.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import pytest
import torch

# One intra-op thread: on a small shared CPU box extra OpenMP threads spin and slow tests down.
torch.set_num_threads(1)

CORPUS = [
    "Instruction: Reverse the word.\nInput: cat\n tac",
    "Instruction: Add the numbers.\nInput: 2 3\n 5",
    "Instruction: Translate to French.\nInput: hello\n bonjour",
    "Instruction: Name the capital of France.\nInput: \n Paris",
    "Use the following example as a guide to answer the query in the same format and style.",
    "Please generate a response to the following query. Example: Query:",
]


WORDS = ["cat", "dog", "sun", "tree", "milk", "rain", "fog", "sky", "sea", "owl", "ant"]
WORD_TASKS = [("Reverse the word.", lambda w: w[::-1]), ("Uppercase it.", str.upper)]


def write_word_pool(path, words):
    """Write a JSONL pool of two word tasks x `words` (2 rows per word); returns the path."""
    rows = [{"instruction": t, "input": w, "output": f(w)} for t, f in WORD_TASKS for w in words]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def word_pool(tmp_path):
    """Factory: word_pool(n_words, name) writes a pool of 2 * n_words rows under tmp_path."""
    return lambda n_words=10, name="pool.jsonl": write_word_pool(tmp_path / name, WORDS[:n_words])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path of a tiny Llama + byte-level BPE tokenizer saved like a user's model directory."""
    from delift_ray.models.tiny import save_tiny_model

    out = tmp_path_factory.mktemp("tiny_model")
    return str(save_tiny_model(out, CORPUS * 4, seed=0, max_positions=256))


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray shared by the tests that need one (4 logical CPUs on any machine)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=300 * 2**20,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto_server) on 127.0.0.1 with one bucket, for the session."""
    from tests.s3server import moto_server

    with moto_server() as server:
        yield server
