"""Benchmarks (not tests): `python bench/run.py [--quick]`. See docs/performance.md."""
