"""Prepare and look at datasets: `python -m harness.data {synthetic,celebamask-hq,preview}`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli import add_subcommand, make_parser, positive_int, run_main
from harness.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.data`."""
    parser = make_parser("python -m harness.data", __doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    synthetic = add_subcommand(
        commands, "synthetic", "render the embedded synthetic 3D portraits into a prepared dataset")
    synthetic.add_argument("--out", required=True, help="output folder (published atomically)")
    synthetic.add_argument("--identities", type=int, default=2500, help="number of identities")
    synthetic.add_argument("--views", type=int, default=4, help="views per identity")
    synthetic.add_argument("--resolution", type=int, default=64, help="32, 64, 128 or 256")
    synthetic.add_argument("--seed", type=int, default=0, help="scene seed")
    celeba = add_subcommand(
        commands, "celebamask-hq", "prepare CelebAMask-HQ from its published layout")
    celeba.add_argument("--raw", required=True, help="the CelebAMask-HQ folder")
    celeba.add_argument("--out", required=True, help="output folder")
    celeba.add_argument("--resolution", type=int, required=True, help="power of two, 32-1024")
    celeba.add_argument("--val-start", type=int, default=28000,
                        help="first index of the validation split (SemanticStyleGAN: 28000)")
    celeba.add_argument("--skip-bad", action="store_true",
                        help="leave out undecodable files, listed in OUT/skipped.txt")
    preview = add_subcommand(commands, "preview", "a PNG grid of images beside their masks")
    preview.add_argument("dataset", help="a prepared dataset folder")
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--count", type=positive_int, default=24, help="number of samples")
    preview.add_argument("--seed", type=int, default=0, help="which samples")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the chosen subcommand."""
    if args.command == "synthetic":
        from harness.data.synthetic import generate_synthetic

        meta = generate_synthetic(args.out, args.identities, args.views, args.resolution,
                                  args.seed)
    elif args.command == "celebamask-hq":
        from harness.data.celebamask import prepare_celebamask

        meta = prepare_celebamask(args.raw, args.out, args.resolution, val_start=args.val_start,
                                  skip_bad=args.skip_bad)
    else:
        if not Path(args.out).suffix.lower() == ".png":
            raise UserError(f"--out {args.out}: the preview is a PNG; give a name ending in .png")
        from harness.data.preview import preview_grid

        print(preview_grid(args.dataset, args.out, args.count, args.seed))
        return 0
    print(f"{args.out}: {meta['num_samples']} samples at {meta['resolution']}px "
          f"({meta['num_train']} train, {meta['num_val']} val), content {meta['content_hash']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
