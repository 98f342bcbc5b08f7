"""The model zoo: shared building blocks and one module per model (see `models.registry`)."""
