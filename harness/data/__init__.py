"""Datasets: the embedded synthetic portraits, CelebAMask-HQ, and their shared prepared format."""
