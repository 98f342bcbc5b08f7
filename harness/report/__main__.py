"""Regenerate a sweep's tables and figures into reports/<sweep>/.

    python -m harness.report --sweep ablation_lifting
    python -m harness.report --all --source wandb-offline runs/ --formats md,csv
    python -m harness.report --sweep ablation_lifting --source wandb my-team/ssgan3d-harness

Sources: `local` reads the run directories under --runs-dir (no network); `wandb` reads the
W&B API (optional ENTITY/PROJECT; needs `wandb login`); `wandb-offline DIR` reads W&B offline
run files under DIR. Every source gives the same tables. Each report folder has a README.md
listing every file with its provenance.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli import make_parser, run_main
from harness.errors import UserError
from harness.report.formats import FORMATS
from harness.report.sources import SOURCES


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.report`."""
    parser = make_parser("python -m harness.report", __doc__.split("\n\n")[0])
    parser.epilog = __doc__.split("\n\n", 1)[1]
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep", action="append", metavar="NAME",
                       help="sweep to report (repeatable)")
    which.add_argument("--all", action="store_true", help="report every sweep of the source")
    parser.add_argument("--source", nargs="+", default=["local"], metavar=("SOURCE", "PATH"),
                        help=f"{' | '.join(SOURCES)}; wandb takes an optional ENTITY/PROJECT, "
                             "wandb-offline a DIR (default: local)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated table formats (default: {','.join(FORMATS)})")
    parser.add_argument("--runs-dir", default="runs", help="sweep run directories (default: runs)")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log tables and figures to a W&B report run (group = sweep)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Build the report(s) and print the folders written."""
    from harness.report import build_report

    source, *rest = args.source
    if len(rest) > 1 or (source == "local" and rest) or (source == "wandb-offline" and not rest):
        raise UserError(f"--source {' '.join(args.source)}: expected local, wandb "
                        "[ENTITY/PROJECT] or wandb-offline DIR")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    written = build_report(args.sweep, args.runs_dir, args.out, source,
                           rest[0] if rest else None, formats, args.wandb)
    for folder in sorted({path.parent for path in written if path.name == "README.md"}):
        sys.stdout.write(f"{folder}\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
