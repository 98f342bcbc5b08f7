"""harness.bench.models: one row per model and preset with finite, positive measurements."""

from __future__ import annotations

import math

import torch

from harness.bench.models import COLUMNS, bench_models, fresh_process_row


def test_smoke_row() -> None:
    table = bench_models(presets=("smoke",), models=["ssgan2d"], repeats=1, device="cpu")
    assert list(table.columns) == list(COLUMNS)
    assert table[["model", "preset", "device"]].values.tolist() == [["ssgan2d", "smoke", "cpu"]]
    row = table.iloc[0]
    for column in ("train_step_s", "images_per_s", "generator_params_m"):
        assert math.isfinite(row[column]) and row[column] > 0, column
    # Peak RSS above the process's earlier high-water mark: a smoke model may add nothing.
    assert math.isfinite(row["peak_memory_mb"]) and row["peak_memory_mb"] >= 0
    assert row["batch_size"] == 4 and row["error"] is None


def test_fresh_process_row_and_its_error_row() -> None:
    """The path of the paper rows (a spawned process per model), at the smoke preset."""
    device = torch.device("cpu")
    row = fresh_process_row("ssgan2d", "smoke", device, timeout_s=600)
    assert row["error"] is None and row["preset"] == "smoke"
    assert row["train_step_s"] > 0 and row["images_per_s"] > 0 and row["peak_memory_mb"] >= 0
    failed = fresh_process_row("ssgan2d", "no-such-preset", device, timeout_s=600)
    assert "no-such-preset" in failed["error"] and "train_step_s" not in failed
