"""`from project.adapters import Sources` keeps working for custom loaders written before the
layout moved the adapters to project.data.adapters (the README's name for it)."""

from project.data.adapters import Sources  # noqa: F401
