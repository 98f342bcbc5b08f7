"""Benchmarks: `python -m harness.bench [renderer|depth-guided|train|eval|models|studio|all]`.

Each section measures its contenders side by side in this one run and prints ratios with
the targets they are held to; `--json OUT` writes every figure (flat dotted keys such as
`renderer.time_ratio`) so progress can be tracked across commits.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import torch

from harness.cli import make_parser, positive_int, run_main
from harness.config import EvalConfig, TrainConfig
from harness.errors import UserError
from harness.io import atomic_write_json
from models.registry import model_names

SECTIONS = ("renderer", "depth-guided", "train", "eval", "models", "studio")
# key -> (comparison, target): what each headline figure is held to
TARGETS: dict[str, tuple[str, float]] = {
    "renderer.memory_ratio": (">=", 10.0),
    "renderer.time_ratio": (">=", 2.0),
    "renderer.memory_ratio_chunked": (">=", 10.0),
    "renderer.time_ratio_chunked": (">=", 2.0),
    "renderer.matmul_fraction": (">=", 0.25),
    "train.paper_step_peak_gb": ("<=", 12.0),
    "depth_guided.speedup": (">=", 3.0),
    "depth_guided.paper.speedup": (">=", 3.0),
    "depth_guided.psnr_db": (">=", 35.0),
    "eval.overhead": ("<=", 0.15),
    # the studio answers a slider within a second at the cpu preset; on a GPU a default
    # inversion (200 steps) of one portrait at the paper preset within a minute
    **{f"studio.{model}.cpu.{what}_s": ("<=", 1.0) for model in model_names()
       for what in ("render", "edit")},
    "studio.3dssgan.paper.inversion_s": ("<=", 60.0),
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.bench`."""
    parser = make_parser("python -m harness.bench", __doc__.split("\n\n")[0])
    parser.add_argument("section", nargs="?", default="all", choices=(*SECTIONS, "all"))
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repeats (median)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--run-dir", type=Path,
                        help="a trained 3dssgan run for depth-guided and eval (default: an "
                             "untrained cpu-preset model)")
    parser.add_argument("--guided-samples", type=positive_int, metavar="N",
                        help="depth-guided: samples rendered per ray (default: the model's)")
    parser.add_argument("--coarse-samples", type=positive_int, metavar="N",
                        help="depth-guided: samples of the density-only pass (default: the "
                        "model's)")
    parser.add_argument("--ray-chunk", type=positive_int, default=512, metavar="RAYS",
                        help="renderer: rays per chunk of the chunked fast path (default 512)")
    parser.add_argument("--max-memory-gb", type=float, default=12.0,
                        help="skip reference renderer cases estimated above this (GiB)")
    parser.add_argument("--triton", action="store_true",
                        help="renderer: also time the fused Triton path on CPU (always on CUDA); "
                             "on CPU it needs TRITON_INTERPRET=1, Triton's interpreter, which "
                             "is slow and times the interpreter, not the kernels")
    parser.add_argument("--compile-mode", default="default",
                        choices=get_args(TrainConfig.model_fields["compile_mode"].annotation),
                        help="train: torch.compile mode of the compile row of the speed "
                             "switches (CUDA; default: default)")
    parser.add_argument("--trace", type=Path, metavar="FILE",
                        help="train: also write a torch.profiler Chrome trace of one training "
                             "step at the paper preset (cpu with --skip-paper) to FILE")
    parser.add_argument("--skip-paper", action="store_true",
                        help="leave out the paper-scale training steps (minutes, ~16 GB) and "
                             "the depth-guided row at the paper's shapes")
    parser.add_argument("--eval-images", type=positive_int, metavar="N",
                        help="images per timed FID evaluation (default: the preset's "
                             "evaluate.fid_samples, 2000 at cpu)")
    parser.add_argument("--fid-extractor", default="auto",
                        choices=get_args(EvalConfig.model_fields["fid_extractor"].annotation),
                        help="FID extractor for eval (default auto: as evaluation chooses)")
    return parser


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in values.items() if isinstance(v, int | float | str)}


def _verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    op, target = TARGETS[key]
    met = value >= target if op == ">=" else value <= target
    return f"target {op} {target:g}: {'met' if met else 'NOT met'}"


def _print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    print(f"\n## {title}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def run_renderer(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from harness.bench.renderer import bench_renderer

    triton = device.type == "cuda" or args.triton
    if triton and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise UserError("--triton on CPU needs Triton's interpreter: run with TRITON_INTERPRET=1 "
                        "in the environment (slow), or on a CUDA device")
    result = bench_renderer(device, repeats=args.repeats, max_memory_gb=args.max_memory_gb,
                            ray_chunk=args.ray_chunk, triton=triton)
    paths = "fast and Triton vs reference" if triton else "fast vs reference"
    _print_rows(f"renderer: {paths} lifting, forward + backward, paper shapes",
                result.pop("rows"))
    return _flat("renderer", result)


def run_depth_guided(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from harness.bench.depth_guided import bench_depth_guided

    settings = dict(repeats=args.repeats, samples=args.guided_samples,
                    coarse=args.coarse_samples)
    result = bench_depth_guided(device, run_dir=args.run_dir, **settings)
    _print_rows("depth-guided vs uniform test-time sampling", [result])
    figures = _flat("depth_guided", result)
    if not args.skip_paper:
        paper = bench_depth_guided(device, preset="paper", count=1, whole=False, **settings)
        _print_rows("depth-guided at the paper's shapes (64x64 rays, 64x64x32 volume, C=256; "
                    "untrained model: renderer speed only)", [paper])
        figures.update(_flat("depth_guided.paper", {key: paper[key] for key in (
            "speedup", "renderer_uniform_s", "renderer_guided_s")}))
    return figures


def run_train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from harness.bench.training import (
        bench_cpu_preset,
        bench_paper_step,
        bench_switches,
        trace_train_step,
    )

    cpu = bench_cpu_preset(device)
    _print_rows("cpu preset: where the time goes (self CPU time)", cpu.pop("profile"))
    figures = _flat("train", {"cpu_it_per_s": cpu["it_per_s"]})
    if not args.skip_paper:
        paper = bench_paper_step(device)
        _print_rows("paper-scale training step", [paper])
        figures.update(_flat("train", {"paper_step_s": paper["step_s"],
                                       "paper_first_step_s": paper["first_step_s"],
                                       "paper_step_peak_gb": paper["peak_gb"]}))
    preset = "cpu" if args.skip_paper else "paper"
    if args.trace:
        top = trace_train_step(device, args.trace, preset)
        _print_rows(f"one training step at the {preset} preset, traced into {args.trace}", top)
    if device.type != "cuda":
        print("\n## speed switches: skipped (bf16 autocast, torch.compile and channels-last are "
              "measured on CUDA only; pass --device cuda on a GPU machine)")
        return figures
    rows = bench_switches(device, preset, compile_mode=args.compile_mode)
    _print_rows(f"speed switches at the {preset} preset (train step without lazy R1; speedup "
                f"over the default step; compile mode {args.compile_mode})", rows)
    for row in rows:
        figures |= {f"train.{preset}.{row['switch']}.{key}": row[key]
                    for key in ("step_s", "peak_gb", "speedup")}
    return figures


def run_eval(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from harness.bench.evaluation import bench_eval

    result = bench_eval(device, run_dir=args.run_dir, count=args.eval_images,
                        repeats=args.repeats, extractor=args.fid_extractor)
    _print_rows("FID evaluation: whole pipeline vs generator and extractor alone",
                [result])
    return _flat("eval", result)


def run_models(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from harness.bench.models import bench_models

    presets = ("cpu",) if args.skip_paper else ("cpu", "paper")
    table = bench_models(presets=presets, repeats=args.repeats, device=str(device))
    _print_rows("models side by side (training step, inference, peak memory)",
                table.to_dict("records"))
    figures: dict[str, Any] = {}
    for row in table.to_dict("records"):
        for column in ("train_step_s", "images_per_s", "peak_memory_mb"):
            figures[f"models.{row['model']}.{row['preset']}.{column}"] = row[column]
    return figures


def run_studio(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from harness.bench.studio import bench_studio
    from harness.studio.inversion import InversionSettings

    rows = bench_studio(device, run_dir=args.run_dir, repeats=args.repeats)
    _print_rows("studio: render, part edit, inversion (cpu preset; untrained models cost what "
                "trained ones do)", rows)
    steps = InversionSettings().steps
    figures: dict[str, Any] = {}
    for row in rows:
        key = f"studio.{row['model']}.{row['preset']}"
        figures |= {f"{key}.render_s": row["render_s"], f"{key}.edit_s": row["edit_s"],
                    f"{key}.inversion_s": row["inversion_s_per_100"] * steps / 100}
    if device.type == "cuda" and not args.skip_paper:
        paper = bench_studio(device, repeats=args.repeats, preset="paper", models=("3dssgan",))[0]
        _print_rows("studio at the paper preset (3D-SSGAN)", [paper])
        figures["studio.3dssgan.paper.inversion_s"] = paper["inversion_s_per_100"] * steps / 100
    return figures


RUNNERS: dict[str, Callable[[argparse.Namespace, torch.device], dict[str, Any]]] = {
    "renderer": run_renderer, "depth-guided": run_depth_guided, "train": run_train,
    "eval": run_eval, "models": run_models, "studio": run_studio,
}


def main(args: argparse.Namespace) -> int:
    """Run the chosen sections, print their tables and the headline figures vs targets."""
    from harness.runtime.device import resolve_device

    if args.run_dir is not None and not args.run_dir.is_dir():
        raise UserError(f"--run-dir {args.run_dir}: no such directory; pass a trained run")
    if args.trace is not None and args.trace.is_dir():
        raise UserError(f"--trace {args.trace}: a directory; pass the trace file to write")
    device = resolve_device(args.device, "--device")
    figures: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads()}
    for section in SECTIONS if args.section == "all" else (args.section,):
        figures.update(RUNNERS[section](args, device))
    print("\n## headline figures")
    for key, value in figures.items():
        is_number = isinstance(value, float)
        shown = f"{value:.4g}" if is_number else str(value)
        print(f"{key:32s} {shown:>12s}  {_verdict(key, value) if is_number else ''}")
    if args.json:
        atomic_write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
