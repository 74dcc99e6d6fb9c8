"""Training: fit the card's stages, monitor, evaluate; runtime settings; the sanity checks."""
