"""Benchmarks: figures printed as ratios measured side by side in one run, and the GPU check."""
