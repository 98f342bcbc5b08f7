"""Train one model: `python -m harness.train [CONFIG.yaml] --run-dir DIR [--preset P] [--set k=v]`.

Without a config file it trains 3D-SSGAN (`model.name: 3dssgan`) on the embedded synthetic
data at the chosen preset (default `cpu`). To resume, run the same command again: training
continues from the newest checkpoint in the run directory. Several processes (torchrun, or
SLURM tasks) train data-parallel; only rank 0 writes.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli import make_parser, run_main
from harness.config import PRESET_NAMES, load_config


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.train`."""
    parser = make_parser("python -m harness.train", __doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="experiment YAML (optional)")
    parser.add_argument("--run-dir", required=True, help="run directory (created; resumed)")
    parser.add_argument("--preset", choices=PRESET_NAMES, help="scale preset (default: cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. train.lr=0.001")
    parser.add_argument("--wandb", action="store_true", help="log to W&B (offline w/o login)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and exit")
    return parser


def main(args: argparse.Namespace) -> int:
    """Resolve the config and train; exit code 1 if training diverged."""
    import yaml

    from harness.config import config_to_dict
    from harness.training.loop import TrainingDiverged, training_loop

    overrides = list(args.overrides) + (["tracking.wandb=true"] if args.wandb else [])
    config = load_config(args.config, args.preset, overrides)
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        return 0
    try:
        training_loop(config, args.run_dir, progress=not args.no_progress)
    except TrainingDiverged as error:
        sys.stderr.write(f"training stopped: {error} (see {args.run_dir}/failure.json)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
