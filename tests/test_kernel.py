"""Kernel scaling: one global min-max per kernel, clip, rows = targets, unscored pairs 0."""

from __future__ import annotations

import numpy as np

from delift_ray.kernel import cosine_kernel, scale_utilities, utility_kernel


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
