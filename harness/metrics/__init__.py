"""Metrics: feature extractors and the measures (FID, KID, identity) built on them."""
