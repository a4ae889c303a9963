"""The Hugging Face hub stays offline: every model comes from a local directory or a package."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def use_offline_hub() -> dict[str, str]:
    """Set OFFLINE_ENV's variables where the user has not; returns their values now in force."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in OFFLINE_ENV}
