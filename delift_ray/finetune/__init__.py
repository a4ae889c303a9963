"""Stage 4: fine-tune on the subset with Ray Train, then evaluate on a held-out test set."""
