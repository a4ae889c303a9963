"""Load the scoring model (any causal LM, by local path, object-store URI or hub id) safely, and
fingerprint it."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from delift_ray import storage
from delift_ray.config import DataConfig, ModelConfig
from delift_ray.data.chat import ChatTemplate, chat_template
from delift_ray.errors import DeliftError, first_line
from delift_ray.models.fetch import local_copy
from delift_ray.models.offline import use_offline_hub

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")
FINGERPRINT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "chat_template.jinja",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
DEFAULT_MAX_LENGTH = 2048


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer, context limit and content fingerprint."""

    model: Any
    tokenizer: Any
    max_length: int
    fingerprint: str
    device: str


def load_tokenizer(cfg: ModelConfig) -> Any:
    """Load only the tokenizer (enough to plan and check lengths); DeliftError on problems."""
    from transformers import AutoTokenizer

    source = _source(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, RuntimeError) as e:
        raise DeliftError(f"model: cannot load {cfg.path!r}: {first_line(e)}") from None
    if tokenizer.eos_token_id is None:
        raise DeliftError(f"model: the tokenizer of {cfg.path!r} has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_chat_template(cfg: ModelConfig, sets: Iterable[DataConfig | None]) -> ChatTemplate | None:
    """The model's chat template, for reading `sets` (None: no set has chat rows, no model is
    given, or its tokenizer has no template; chat rows are then `role: content` lines)."""
    if not cfg.path or not any(d is not None and d.format == "messages" for d in sets):
        return None
    return chat_template(load_tokenizer(cfg))


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load model + tokenizer per config; DeliftError with one line on any problem."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(cfg)
    source = _source(cfg)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=getattr(torch, cfg.dtype),
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=None if cfg.allow_pickle_weights else True,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise DeliftError(f"model: cannot load {cfg.path!r}: {first_line(e)}") from None
    device = resolve_device(cfg.device)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise DeliftError(f"model: cannot move the model to device {device!r}: {e}") from None
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        max_length=max_length(cfg, model.config, tokenizer),
        fingerprint=fingerprint(cfg),
        device=device,
    )


def resolve_device(device: str) -> str:
    """model.device as torch names it: `auto` is cuda when this process sees a GPU, else cpu."""
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def max_length(cfg: ModelConfig, model_config: Any, tokenizer: Any) -> int:
    """model.max_length if set, else the longest sequence the model and tokenizer both accept."""
    if cfg.max_length:
        return cfg.max_length
    limits = [getattr(model_config, "max_position_embeddings", None), tokenizer.model_max_length]
    usable = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(usable) if usable else DEFAULT_MAX_LENGTH


def model_config(cfg: ModelConfig) -> Any:
    """The model's transformers config (no weights loaded)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(_source(cfg), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise DeliftError(
            f"model: cannot load the config of {cfg.path!r}: {first_line(e)}"
        ) from None


def fingerprint(cfg: ModelConfig) -> str:
    """A content hash of the model directory's weights, config and tokenizer files."""
    h = hashlib.sha256()
    root = Path(_source(cfg))
    if root.is_dir():
        names = sorted(
            p.name
            for p in root.iterdir()
            if p.is_file() and (p.name in FINGERPRINT_FILES or p.suffix in WEIGHT_SUFFIXES)
        )
        for name in names:
            h.update(name.encode())
            with open(root / name, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
    else:
        mc = model_config(cfg)
        h.update(cfg.path.encode())
        h.update(mc.to_json_string().encode())
        h.update(str(getattr(mc, "_commit_hash", "")).encode())
    h.update(cfg.dtype.encode())
    return h.hexdigest()[:16]


def with_absolute_path(cfg: ModelConfig) -> ModelConfig:
    """The same config with a local model.path made absolute (workers may run in another cwd)."""
    local = Path(cfg.path).expanduser()
    return dataclasses.replace(cfg, path=str(local.resolve())) if local.exists() else cfg


def _source(cfg: ModelConfig) -> str:
    """The local directory or hub id to load from, after safety checks."""
    use_offline_hub()
    local = Path(local_copy(cfg.path) if storage.is_uri(cfg.path) else cfg.path).expanduser()
    if local.exists():
        _check_local_dir(local, cfg.allow_pickle_weights)
        return str(local)
    if _looks_like_path(cfg.path):
        raise DeliftError(f"model: model.path does not exist: {cfg.path}")
    return cfg.path


def _check_local_dir(path: Path, allow_pickle: bool) -> None:
    if not path.is_dir():
        raise DeliftError(f"model: model.path must be a model directory, got a file: {path}")
    if not (path / "config.json").is_file():
        raise DeliftError(f"model: {path} has no config.json (not a transformers model directory)")
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any((path / name).exists() for name in PICKLE_WEIGHTS)
    if not has_safetensors and has_pickle and not allow_pickle:
        raise DeliftError(
            f"model: {path} has only pickle weights (unsafe to load); convert them to safetensors "
            "or set model.allow_pickle_weights=true if you trust the files"
        )
    if not has_safetensors and not has_pickle:
        raise DeliftError(f"model: {path} has no weight files (*.safetensors)")


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.count("/") > 1
