"""Feature extractors for the metrics (the synthetic-face CNN `synthface-v1`)."""
