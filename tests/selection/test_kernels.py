"""Kernel scaling: one global min-max per kernel, clip, rows = targets, unscored pairs 0."""

from __future__ import annotations

import numpy as np

from delift_ray.selection.kernels import cosine_kernel, scale_utilities, utility_kernel


def test_minmax_is_global_and_clip_keeps_positive_part():
    u = np.array([-0.5, 0.0, 0.25, 0.5])
    np.testing.assert_allclose(scale_utilities(u, "minmax"), [0.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(scale_utilities(u, "clip"), [0.0, 0.0, 0.25, 0.5])
    assert not scale_utilities(np.full(3, 0.2), "minmax").any()


def test_utility_kernel_layout_and_unscored_zero():
    rows = np.array([0, 0, 1, 2])
    cols = np.array([1, 2, 0, 2])
    u = np.array([0.1, -0.1, 0.3, 0.0])
    k = utility_kernel(rows, cols, u, (3, 3), "minmax").toarray()
    expected = np.zeros((3, 3))
    expected[0, 1], expected[0, 2], expected[1, 0], expected[2, 2] = 0.5, 0.0, 1.0, 0.25
    np.testing.assert_allclose(k, expected, atol=1e-7)
    assert k.dtype == np.float32


def test_cosine_kernel_range_and_orientation():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    k = cosine_kernel(a, b)
    assert k.shape == (2, 3)
    np.testing.assert_allclose(k, [[1.0, 0.0, 0.5], [0.5, 0.5, 1.0]])


def test_a_knn_sized_kernel_stays_sparse_from_utilities_to_picks():
    """n = 1M targets with 3 scored pairs each: any n x n array on the way (4 TB in float32)
    would fail; the CSR kernel, the objective and lazy greedy stay O(nnz)."""
    import tracemalloc

    from delift_ray.selection.greedy import lazy_greedy
    from delift_ray.selection.objectives import facility_location

    n, per_row = 1_000_000, 3
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), per_row)
    cols = rng.integers(0, n, n * per_row)
    u = rng.normal(size=n * per_row)
    tracemalloc.start()
    kernel = utility_kernel(rows, cols, u, (n, n), "minmax")
    picks = lazy_greedy(facility_location(kernel), 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert kernel.shape == (n, n) and kernel.nnz <= n * per_row
    assert len(picks.indices) == 20 and picks.value > 0
    # about 120 bytes per scored pair at the peak (COO -> CSR -> CSC copies): 340 MiB here
    assert peak < 2**30, f"peak {peak / 2**20:.0f} MiB"
