"""Benchmarks: each figure a ratio against the peer measured in the same run (see bench/README.md)."""
