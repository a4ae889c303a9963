"""The models a run uses: load and fingerprint the LM, embed texts, and the tiny models."""
