"""Metrics of the evaluation suite (`python -m harness.evaluate`), one module per measure:
fid.py (FID/KID), identity.py, disentangle.py (Table 1), views.py (reprojection), with
generation.py (seeded batched rendering) and suite.py (plan, run, write, track);
extractors/ holds the shipped synthetic-face network."""
