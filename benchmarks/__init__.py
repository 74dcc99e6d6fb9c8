"""make bench / make bench-data: measured speed and memory figures, outside the library code."""
