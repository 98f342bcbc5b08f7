"""Feature extractors for the metrics (the synthetic-face CNNs `synthface-v2` and `-v1`)."""
