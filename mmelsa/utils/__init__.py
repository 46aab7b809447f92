"""Helpers shared by the package's tools and tests (timing and peak memory for benchmarks)."""
