"""Keras template for reproducing a published image classifier and optimising it.

Flow: cards -> config (schema, cards) -> data (adapters -> split -> pipeline) -> model
(backbones + head) -> train / tune -> artifacts in runs/ -> report.
"""
