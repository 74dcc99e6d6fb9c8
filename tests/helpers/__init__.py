"""Test helpers shared by several test files (importable as `helpers`: pytest puts tests/ on sys.path)."""
