"""Benchmarks: speed and memory measured side by side in one run, reported as ratios.

`python -m harness.bench [renderer|depth-guided|train|eval|models|all] [--json OUT]`. Machines
here are noisy, so every comparison runs its contenders in the same process, alternating, and
reports medians of repeats; peak memory is measured in a fresh child process per case.
"""
