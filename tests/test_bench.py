"""Benchmarks: the measurements run at tiny shapes, and their command fails cleanly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from harness.bench.depth_guided import bench_depth_guided, mask_miou, psnr_db
from harness.bench.measure import peak_memory_bytes
from harness.bench.renderer import RendererShape, bench_renderer, renderer_case

CPU = torch.device("cpu")
TINY = RendererShape(batch=1, samples=6, parts=3, channels=8, depth=8, size=8)


def test_renderer_case_runs_both_paths_and_counts_flops() -> None:
    for path in ("fast", "reference"):
        renderer_case(path, TINY)()
    assert TINY.entries == 1 * 64 * 6 * 4 * 3
    assert TINY.fast_flops() == 6 * TINY.entries * 8
    # the reference path's estimate grows with the volume, the fast path's work does not
    deeper = RendererShape(batch=1, samples=6, parts=3, channels=8, depth=64, size=8)
    assert deeper.reference_bytes_estimate() > 4 * TINY.reference_bytes_estimate()
    assert deeper.fast_flops() == TINY.fast_flops()


def test_peak_memory_of_a_child_process_sees_a_big_allocation() -> None:
    small = peak_memory_bytes(_allocate, CPU, megabytes=1)
    big = peak_memory_bytes(_allocate, CPU, megabytes=400)
    assert big - small > 300 * 2**20


def test_peak_memory_leaves_out_what_the_first_call_keeps() -> None:
    # a first call that keeps 300 MB (as a lazy import or cache would) and then needs 1 MB
    assert peak_memory_bytes(_allocate_after_a_cache, CPU) < 100 * 2**20
    assert peak_memory_bytes(_allocate, CPU, megabytes=300) > 250 * 2**20


_CACHE: list[torch.Tensor] = []


def _allocate_after_a_cache(device: str):
    def run() -> None:
        if not _CACHE:
            _CACHE.append(torch.ones(300 * 2**18, device=device))
        assert torch.ones(2**18, device=device).sum() > 0

    return run


def _allocate(device: str, megabytes: int):
    def run() -> None:
        block = torch.ones(megabytes * 2**18, device=device)  # float32: 4 bytes each
        assert block.sum() > 0

    return run


def test_bench_renderer_reports_ratios_and_skips_the_reference_above_the_limit() -> None:
    result = bench_renderer(CPU, repeats=1, batches=(1,), samples=(6,), max_memory_gb=100)
    assert math.isfinite(result["time_ratio"]) and "memory_ratio" in result["rows"][0]
    assert math.isfinite(result["memory_ratio_chunked"]) and result["rows"][0]["chunked_s"] > 0
    assert 0 < result["matmul_fraction"] < 1
    skipped = bench_renderer(CPU, repeats=1, batches=(1,), samples=(6,), max_memory_gb=0.01)
    assert "reference_s" not in skipped["rows"][0] and math.isnan(skipped["time_ratio"])


def test_psnr_and_miou_on_known_inputs() -> None:
    a = torch.zeros(1, 3, 4, 4)
    assert psnr_db(a, a) == math.inf
    assert abs(psnr_db(a, a + 0.2) - 20.0) < 1e-4  # MSE 0.01 on [0, 1]
    mask = torch.zeros(1, 2, 2, 2)
    mask[:, 0, 0] = 1  # top row class 0, bottom row class 1
    mask[:, 1, 1] = 1
    shifted = torch.zeros_like(mask)
    shifted[:, 0] = 1  # everything class 0
    assert mask_miou(mask, mask) == 1.0
    assert abs(mask_miou(mask, shifted) - (0.5 + 0.0) / 2) < 1e-9


def test_depth_guided_bench_approaches_the_uniform_render_with_more_samples() -> None:
    few, many = (bench_depth_guided(CPU, preset="smoke", count=2, repeats=1, uniform_samples=8,
                                    samples=n, coarse=8) for n in (2, 64))
    assert many["psnr_db"] > few["psnr_db"] and many["psnr_db"] > 30


def test_depth_guided_bench_times_the_renderer_alone_without_agreement() -> None:
    result = bench_depth_guided(CPU, preset="smoke", count=1, repeats=1, uniform_samples=8,
                                whole=False)
    assert result["speedup"] > 0 and result["resolution"] == 16
    assert "psnr_db" not in result and "generator_speedup" not in result


def test_bench_command_rejects_a_missing_run_dir_in_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "harness.bench", "depth-guided", "--run-dir",
                             "/nonexistent/run"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "/nonexistent/run" in result.stderr


def test_random_prepared_stand_in_data_loads_at_any_resolution(tmp_path) -> None:
    from harness.bench.training import write_random_prepared
    from harness.config import load_config
    from harness.data.loading import open_dataset

    path = write_random_prepared(tmp_path / "data", resolution=16, count=4)
    config = load_config(None, "smoke", ["data.source=celebamask-hq", f"data.path={path}"])
    dataset = open_dataset(config.data, 16)
    assert len(dataset) == 4 and dataset[0]["image"].shape == (3, 16, 16)


def test_paper_step_bench_times_two_steps_and_reports_the_cpu_peak_as_resident_memory() -> None:
    from harness.bench.training import bench_paper_step

    result = bench_paper_step(torch.device("cpu"), batch=2, preset="smoke")
    assert result["device"] == "cpu" and result["batch"] == 2
    assert result["step_s"] > 0 and result["first_step_s"] > 0
    assert result["peak_gb"] == result["host_peak_gb"] > 0.1  # torch alone takes more


def test_bench_eval_times_the_fid_pipeline_and_its_parts(data_cache, monkeypatch) -> None:
    from harness.bench.__main__ import SECTIONS
    from harness.bench.evaluation import bench_eval

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(data_cache))  # the smoke data of the session
    result = bench_eval(CPU, preset="smoke", count=6, repeats=1, extractor="synthface-v1")
    assert "eval" in SECTIONS and result["images"] == 6 and result["extractor"] == "synthface-v1"
    for key in ("pipeline", "generator", "extractor", "statistics"):
        for clock in ("s", "cpu_s"):
            value = result[f"{key}_{clock}"]
            assert math.isfinite(value) and value > 0, (key, clock)
    for key in ("pipeline", "generator", "extractor"):
        assert result[f"{key}_images_per_s"] == 6 / result[f"{key}_s"]
    cpu = result["pipeline_cpu_s"] / (result["generator_cpu_s"] + result["extractor_cpu_s"]) - 1
    wall = result["pipeline_s"] / (result["generator_s"] + result["extractor_s"]) - 1
    assert result["clock"] == "cpu" and result["overhead"] == cpu > -1
    assert result["overhead_wall"] == wall > -1


def test_a_fresh_process_that_dies_without_a_result_is_noticed_at_once() -> None:
    import multiprocessing
    import os
    import time

    from harness.bench.models import _result_or_none

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=os._exit, args=(3,))  # as if killed before reporting
    process.start()
    started = time.monotonic()
    assert _result_or_none(results, process, timeout_s=600) is None
    assert time.monotonic() - started < 60 and process.exitcode == 3


def test_compulsory_traffic_of_a_render_and_the_copy_bandwidth() -> None:
    from harness.bench.measure import copy_bytes_per_second

    # maps: K*H*W*(C + 2) = 3*64*10; outputs: rays*(C + K + N + 1) = 64*18; read and written
    # once each way, float32
    assert TINY.compulsory_bytes() == 2 * 4 * (3 * 64 * 10 + 64 * 18)
    assert copy_bytes_per_second(CPU, size_bytes=2**24, repeats=3) > 1e8


def test_bench_renderer_times_the_triton_path_beside_the_others_in_the_interpreter() -> None:
    # Triton's interpreter must be chosen before triton is imported: a fresh process. It
    # times the interpreter, so only the row's presence and its arithmetic are checked (the
    # reference path is left out: at 2x2 pixels its memory rounds to nothing).
    code = ("import json, torch; from harness.bench.renderer import RendererShape, "
            "bench_renderer; r = bench_renderer(torch.device('cpu'), repeats=1, batches=(1,), "
            "samples=(2,), max_memory_gb=0, triton=True, base=RendererShape(parts=2, "
            "channels=4, depth=4, size=2)); print(json.dumps(r))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.splitlines()[-1])
    row = figures["rows"][0]
    assert row["triton_s"] > 0 and row["triton_speedup"] == row["fast_s"] / row["triton_s"]
    shape = RendererShape(batch=1, samples=2, parts=2, channels=4, depth=4, size=2)
    assert row["triton_gbps"] == pytest.approx(shape.compulsory_bytes() / row["triton_s"] / 1e9)
    assert figures["triton_bandwidth_fraction"] == pytest.approx(
        row["triton_gbps"] / figures["copy_gbps"])
    assert row["fast_s"] > 0 and row["chunked_s"] > 0  # the other paths ran beside it


def test_speed_switch_rows_and_the_trace_of_a_step(tmp_path) -> None:
    from harness.bench.training import bench_switches, trace_train_step

    rows = bench_switches(CPU, "smoke", switches=("channels_last",), steps=1, warmup=1)
    assert [row["switch"] for row in rows] == ["default", "channels_last"]
    assert all(row["error"] is None and row["step_s"] > 0 for row in rows)
    assert rows[0]["speedup"] == 1 and rows[1]["speedup"] == rows[0]["step_s"] / rows[1]["step_s"]
    top = trace_train_step(CPU, tmp_path / "trace" / "step.json", preset="smoke", warmup=1)
    assert json.loads((tmp_path / "trace" / "step.json").read_text())["traceEvents"]
    assert top and all(0 <= row["fraction"] <= 1 for row in top)
