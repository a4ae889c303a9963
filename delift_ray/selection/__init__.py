"""Stage 3: kernels, submodular objectives, greedy optimisers and the selection methods.

Imports neither ray nor torch: this is numpy and scipy only.
"""
