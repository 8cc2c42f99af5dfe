"""Benchmark datasets, metrics, analysis and submission files."""
