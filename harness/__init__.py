"""Experiment harness for 3D-aware compositional portrait synthesis."""
