"""Benchmarks: `python -m bench.<name> [--quick] [--json]` from the repository root."""
