"""Which (target i, demonstration j) pairs get scored."""

from __future__ import annotations

import numpy as np


def dense_pairs(n_targets: int, n_demos: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), grouped by demonstration j (the order prefix sharing wants)."""
    j, i = np.divmod(np.arange(n_targets * n_demos, dtype=np.int64), n_targets)
    return i, j
