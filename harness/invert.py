"""Invert portraits into a run's latent space:
`python -m harness.invert RUN_DIR IMAGES... --out DIR`.

For each portrait (centre-cropped to a square, converted to RGB and resized to the generator's
resolution, each step noted), the per-slot latents of Eq. 1 are optimised from the mean latent
at the given camera, with a pixel loss, an identity loss (synthface-v2 on synthetic data, an
insightface ArcFace .onnx given by --arcface-onnx on real data) and a mask loss when --masks
gives class-id masks; optionally the generator is then tuned a few steps (pivotal tuning).
See harness/studio/inversion.py and docs/studio.md.

Writes into DIR, for each image STEM:
  STEM.latent.pt           the latents (1, S, w_dim), torch tensor
  STEM.reconstruction.png  the reconstruction at the portrait's camera
  STEM.generator.pt        the tuned generator's weights (only with --tune-steps)
  inversion.json           per image: PSNR, identity similarity, seconds, notes, settings
A re-run skips the images inversion.json already holds with the same settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from harness.cli import make_parser, run_main
from harness.errors import UserError
from harness.studio.inversion import InversionSettings

RESULTS_FILE = "inversion.json"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.invert`."""
    parser = make_parser("python -m harness.invert", __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run directory")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="portrait files (PNG, JPEG)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--masks", metavar="MASK", nargs="+",
                        help="one class-id mask per image (mode L or P PNG, ids 0..12), in order")
    defaults = InversionSettings()
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help=f"optimisation steps on the latents (default {defaults.steps})")
    parser.add_argument("--lr", type=float, default=defaults.lr,
                        help=f"their Adam learning rate (default {defaults.lr:g})")
    parser.add_argument("--identity-weight", type=float, default=defaults.identity_weight,
                        help=f"weight of the identity loss (default {defaults.identity_weight:g}; "
                             "0: pixels only)")
    parser.add_argument("--mask-weight", type=float, default=defaults.mask_weight,
                        help=f"weight of the mask loss with --masks (default "
                             f"{defaults.mask_weight:g})")
    parser.add_argument("--tune-steps", type=int, default=defaults.tune_steps,
                        help="pivotal tuning: generator steps after the latents (default 0)")
    parser.add_argument("--yaw", type=float, default=math.degrees(defaults.yaw),
                        help="the portraits' camera yaw in degrees (default 90: frontal)")
    parser.add_argument("--pitch", type=float, default=math.degrees(defaults.pitch),
                        help="the portraits' camera pitch in degrees (default 90: level)")
    parser.add_argument("--arcface-onnx", metavar="PATH",
                        help="insightface ArcFace .onnx: identity loss and similarity on real "
                             "data (default: the run's evaluate.arcface_onnx)")
    parser.add_argument("--snapshot", metavar="PATH",
                        help="a network snapshot (default: the run's newest)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    return parser


def _settings(args: argparse.Namespace) -> InversionSettings:
    for name in ("steps", "tune_steps"):
        if getattr(args, name) < 0 or (name == "steps" and args.steps < 1):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {getattr(args, name)}: give a whole number of steps "
                            f"({'at least 1' if name == 'steps' else '0 or more'})")
    for name in ("lr", "identity_weight", "mask_weight"):
        if not math.isfinite(getattr(args, name)) or getattr(args, name) < 0 or (
                name == "lr" and args.lr == 0):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {getattr(args, name)}: give a finite number "
                            f"{'above' if name == 'lr' else 'of at least'} 0")
    return InversionSettings(steps=args.steps, lr=args.lr, identity_weight=args.identity_weight,
                             mask_weight=args.mask_weight, tune_steps=args.tune_steps,
                             yaw=math.radians(args.yaw), pitch=math.radians(args.pitch))


def main(args: argparse.Namespace) -> int:
    """Check every input, then invert the portraits one by one, saving as each finishes."""
    from harness.io import atomic_torch_save, atomic_write_json, read_json_file
    from harness.metrics.identity import choose_embedder
    from harness.studio.engine import load_studio
    from harness.studio.inversion import identity_feature, invert, read_portrait
    from harness.visualize import save_png

    settings = _settings(args)
    if args.masks is not None and len(args.masks) != len(args.images):
        raise UserError(f"--masks: {len(args.masks)} mask(s) for {len(args.images)} image(s); "
                        "give one mask per image, in the same order, or none")
    stems = [Path(image).stem for image in args.images]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise UserError(f"{twice[0]}: two images with this file name would write the same "
                        "outputs; rename one")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file, not a folder; give a folder for the outputs")
    studio = load_studio(args.run_dir, args.snapshot, args.device)
    resolution = studio.config.model.resolution
    masks = args.masks or [None] * len(args.images)
    portraits = [read_portrait(image, resolution, mask) for image, mask in zip(args.images, masks,
                                                                             strict=True)]
    arcface = args.arcface_onnx or studio.config.evaluate.arcface_onnx
    phi = identity_feature(studio, arcface)
    try:
        embedder = choose_embedder(studio.config, arcface, studio.device)
    except UserError:
        embedder = None  # real data without ArcFace: PSNR only
    record = {key: value for key, value in dataclasses.asdict(settings).items()}
    record |= {"run_dir": str(Path(args.run_dir).resolve()), "snapshot": str(studio.loaded.path),
               "iteration": studio.loaded.iteration, "arcface_onnx": arcface}
    results_path = out / RESULTS_FILE
    results: dict[str, Any] = (read_json_file(results_path, "remove it to invert every image "
                                              "again") if results_path.is_file() else {})
    if not isinstance(results, dict):
        raise UserError(f"{results_path}: not an inversion results file (a JSON object of "
                        "images); remove it to invert every image again")
    out.mkdir(parents=True, exist_ok=True)
    for image, stem, portrait in zip(args.images, stems, portraits, strict=True):
        done = results.get(stem)
        if done and done.get("settings") == record and (out / f"{stem}.latent.pt").is_file():
            sys.stdout.write(f"{stem}: done already (PSNR {done['psnr']:.2f} dB)\n")
            continue
        result = invert(studio, portrait, settings, phi, embedder=embedder)
        atomic_torch_save(out / f"{stem}.latent.pt", result.w.cpu())
        save_png(result.reconstruction, out / f"{stem}.reconstruction.png")
        if settings.tune_steps:
            atomic_torch_save(out / f"{stem}.generator.pt", result.generator.state_dict())
        results[stem] = {"image": str(Path(image).resolve()), "psnr": round(result.psnr, 3),
                         "identity": None if result.identity is None
                         else round(result.identity, 4),
                         "embedder": result.embedder, "seconds": round(result.seconds, 2),
                         "final_loss": round(result.losses[-1], 6), "notes": portrait.notes,
                         "settings": record}
        atomic_write_json(results_path, results)
        identity = ("" if result.identity is None
                    else f", identity {result.identity:.3f} ({result.embedder})")
        sys.stdout.write(f"{stem}: PSNR {result.psnr:.2f} dB{identity}, {result.seconds:.1f} s"
                         + (f" [{'; '.join(portrait.notes)}]" if portrait.notes else "") + "\n")
    sys.stdout.write(f"wrote {results_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
