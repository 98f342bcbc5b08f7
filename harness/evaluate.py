"""Evaluate a trained run: `python -m harness.evaluate RUN_DIR [--metrics fid,kid,id,...]`.

Measures the EMA generator of the run's newest network snapshot and writes RUN_DIR/metrics.json
(plus RUN_DIR/eval/disentangle.csv and difference_maps.npz), and a W&B "eval" run when the
run tracks to W&B. What is measured comes from the run's config (`evaluate.*`: the metrics,
default the set below; the sample counts; weight files), the options here replacing it:

  fid, kid     torch-fidelity FID/KID of generated images (truncation 1, cameras from the pose
               prior or, with --set evaluate.cameras=dataset, the data's poses) against every
               real image. Synthetic data: the shipped `synthface-v2` features (printed beside
               every number: not an Inception FID; `--set evaluate.fid_extractor=synthface-v1`
               for the earlier, realism-blind network). Real data: `inception-v3-compat`, whose
               weights must already be on disk (--inception-weights, or torch's hub cache).
  id           identity consistency: cosine similarity of face embeddings of one latent at two
               random poses (synthface-v2 on synthetic data; an insightface ArcFace ONNX file
               on real data, on a fixed centre crop, or aligned by five SCRFD landmarks
               with --face-detector-onnx).
  disentangle  3D-SSGAN Table 1: D_mean and masked D_mean of part edits (Eq. 14) for mouth,
               eyes, brows, nose and hair, at the frontal and at random cameras.
  views        reprojection through the rendered depth between two poses: photometric L1 over
               co-visible pixels and mIoU of the warped masks (no pretrained network).

Nothing is downloaded: a missing weights file is a one-line error (exit code 2).
"""

from __future__ import annotations

import argparse
import sys

from harness.cli import make_parser, run_main
from harness.metrics import registry
from harness.metrics.suite import METRICS, evaluate_run

__all__ = ["build_parser", "evaluate_run", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.evaluate`."""
    parser = make_parser("python -m harness.evaluate", __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run directory")
    parser.add_argument("--metrics", help=(
        "comma-separated metrics (default: the run's evaluate.metrics, else "
        f"{','.join(METRICS)}): " + "; ".join(
            f"{name}: {registry.get(name).summary}" for name in registry.names())))
    parser.add_argument("--num-samples", type=int, metavar="N",
                        help="samples for every metric (default: the run's evaluate.* counts; "
                             "paper: 50,000 for FID, 1,024 for id, 1,000 for disentangle)")
    parser.add_argument("--inception-weights", metavar="PATH",
                        help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
                             "(default: the run's evaluate.inception_weights, else torch's hub "
                             "cache); needed for FID on real data")
    parser.add_argument("--arcface-onnx", metavar="PATH",
                        help="insightface ArcFace recognition model (.onnx) for the id metric; "
                             "needed on real data; faces are a fixed centre crop resized to "
                             "112x112 (evaluate.id_crop) unless --face-detector-onnx is given")
    parser.add_argument("--face-detector-onnx", metavar="PATH",
                        help="insightface SCRFD face detector with landmarks (.onnx, e.g. "
                             "buffalo_l/det_10g.onnx): ArcFace faces are aligned by their five "
                             "landmarks (portraits resized to evaluate.id_detector_size first); "
                             "images without a detection fall back to the centre crop and are "
                             "counted in metrics.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of latents and cameras")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--snapshot", metavar="PATH",
                        help="a network snapshot to evaluate (default: the run's newest)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override an evaluate.* key (or data.path, data.cache_dir), e.g. "
                             "evaluate.cameras=dataset")
    tracking = parser.add_mutually_exclusive_group()
    tracking.add_argument("--wandb", dest="track", action="store_true", default=None,
                          help="log an eval run to W&B (default: as the run's tracking.wandb)")
    tracking.add_argument("--no-wandb", dest="track", action="store_false",
                          help="do not log to W&B")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the inputs, print what would be measured, and exit")
    return parser


def main(args: argparse.Namespace) -> int:
    """Plan (checking every input first), run, print the results."""
    from harness.metrics.suite import format_results, plan_evaluation, run_plan

    plan = plan_evaluation(args.run_dir, args.metrics, args.num_samples, args.inception_weights,
                           args.arcface_onnx, args.face_detector_onnx, args.seed, args.device,
                           args.overrides, args.snapshot)
    if args.dry_run:
        sys.stdout.write(plan.describe() + "\n")
        return 0
    values = run_plan(plan, args.track)
    sys.stdout.write(format_results(values, plan.metrics)
                     + f"\nwrote {plan.run_dir / 'metrics.json'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
