"""Explore a trained run in the browser: `python -m harness.studio RUN_DIR [--port 7860]`.

Serves a local web page (Gradio) over the EMA generator of the run's newest network snapshot
(or --snapshot): sample portraits and turn the camera (image, mask, depth), edit one part's
shape or texture with the edit's D_mean and masked D_mean (Eq. 14), switch parts on one by one
(progressive generation), interpolate toward another latent, invert an uploaded portrait (and
optionally its class mask) and go on editing it, and export a PNG and a turntable GIF. Nothing
is fetched from the network and nothing is written into the run directory. See docs/studio.md.

Needs the studio extra: pip install -e '.[studio]'. Stop the server with Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli import make_parser, run_main
from harness.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.studio`."""
    parser = make_parser("python -m harness.studio", __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run directory")
    parser.add_argument("--snapshot", metavar="PATH",
                        help="a network snapshot (default: the run's newest)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--arcface-onnx", metavar="PATH",
                        help="insightface ArcFace .onnx: identity loss and similarity of "
                             "inversions on real data (default: the run's evaluate.arcface_onnx)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Load the run (every input checked before anything is served), then serve the page."""
    from harness.studio.engine import load_studio

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: give a port number between 1 and 65535")
    studio = load_studio(args.run_dir, args.snapshot, args.device)
    try:
        from harness.studio.app import build_app, launch
    except ImportError as error:
        raise UserError(f"the studio needs {error.name or 'gradio'}: pip install -e "
                        "'.[studio]'") from None
    demo = build_app(studio, args.arcface_onnx or studio.config.evaluate.arcface_onnx)
    launch(demo, args.host, args.port, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
