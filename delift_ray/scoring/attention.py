"""What a model's attention allows prefix sharing to do, and the masks a packed row needs.

A packed row holds several segments back to back: a demonstration's prefix, then the suffixes of
its targets, each suffix attending to the prefix and to itself, with positions continuing from
the prefix's length (so every suffix sees exactly the tokens and positions of its own unshared
sequence). That needs a model whose every layer is attention over per-token keys, which takes
position ids and a custom 4-D mask: full attention, or a sliding window (the window is applied
to positions here, per layer type, as transformers applies it to one unpadded sequence).
Recurrent or convolutional layers (Mamba, LFM2), ALiBi biases or attention kernels that take no
mask are refused, with the reason; those models are scored unshared, which is exact for any
model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

ATTENTION_LAYERS = ("full_attention", "sliding_attention")
MASKED_KERNELS = ("sdpa", "eager")


@dataclass(frozen=True)
class LayerWindows:
    """The attention window of each layer type a model has (None: full attention)."""

    windows: dict[str, int | None]
    per_layer_type: bool  # the model takes a dict of masks, one per layer type


def layer_windows(config: Any) -> LayerWindows:
    """Windows per layer type: `layer_types` if the config lists them, else one for all layers."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    if not types:
        kind = "sliding_attention" if isinstance(window, int) and window > 0 else "full_attention"
        types = [kind]
    windows = {t: (window if t == "sliding_attention" else None) for t in dict.fromkeys(types)}
    return LayerWindows(windows, per_layer_type=len(windows) > 1)


def sharing_refusal(config: Any, model_class: Any) -> str | None:
    """Why prefix sharing cannot be exact for this model (None if it can)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    name = getattr(config, "model_type", type(config).__name__)
    params = inspect.signature(model_class.forward).parameters
    if "position_ids" not in params or "attention_mask" not in params:
        return f"{name} takes no position ids and attention mask (a recurrent model)"
    other = [
        t
        for t in dict.fromkeys(getattr(text, "layer_types", None) or [])
        if t not in ATTENTION_LAYERS
    ]
    if other:
        return (
            f"{name} has {', '.join(other)} layers, which keep a state rather than per-token keys"
        )
    if getattr(text, "alibi", False) or getattr(text, "position_embedding_type", "") == "alibi":
        return f"{name} uses ALiBi position biases, which a custom mask would drop"
    kernel = getattr(text, "_attn_implementation", None) or getattr(
        config, "_attn_implementation", None
    )
    if kernel is not None and kernel not in MASKED_KERNELS:
        return f"the attention implementation {kernel!r} takes no custom mask (use sdpa or eager)"
    if windows_bad := [
        w for w in layer_windows(config).windows.values() if w is not None and w < 1
    ]:
        return f"{name} has a sliding window of {windows_bad[0]}"
    return None


@dataclass
class PackedRow:
    """Packed rows, (L,) or (B, L): token ids, and per token its segment group, suffix number and
    position."""

    ids: np.ndarray
    group: np.ndarray  # segments that may see each other share a group (a prefix and its suffixes)
    suffix: np.ndarray  # 0 on a prefix, k >= 1 on the k-th suffix of its group
    position: np.ndarray


def packed_mask(row: PackedRow, layers: LayerWindows, kernel: str, dtype: Any, device: Any) -> Any:
    """The (B, 1, L, L) mask of packed rows (B = 1 for one row), or a dict per layer type."""
    import torch

    group = torch.as_tensor(np.atleast_2d(row.group), device=device)
    suffix = torch.as_tensor(np.atleast_2d(row.suffix), device=device)
    pos = torch.as_tensor(np.atleast_2d(row.position), device=device)
    index = torch.arange(group.shape[1], device=device)
    seen = (
        (group[:, None, :] == group[:, :, None])
        & ((suffix[:, None, :] == 0) | (suffix[:, None, :] == suffix[:, :, None]))
        & (index[None, :] <= index[:, None])
    )
    distance = pos[:, :, None] - pos[:, None, :]
    masks = {}
    for kind, window in layers.windows.items():
        allowed = seen if window is None else seen & (distance < window)
        allowed = allowed[:, None]
        if kernel == "eager":  # eager attention adds the mask to its scores
            zero = torch.zeros((), dtype=dtype, device=device)
            allowed = torch.where(allowed, zero, torch.finfo(dtype).min)
        masks[kind] = allowed
    return masks if layers.per_layer_type else next(iter(masks.values()))
