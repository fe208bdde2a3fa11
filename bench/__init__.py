"""Benchmarks: scripts that print measured figures (they assert nothing about timing)."""
