"""Keras Tuner random search, coarse to fine, with compiled-model reuse and a time budget."""
