"""Training: simulated maps, splits, datasets and training loops (no ChimeraX imports)."""
