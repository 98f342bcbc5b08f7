"""Shared plumbing for the `python -m harness.<verb>` entry points."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from harness.errors import UserError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2 (argparse's own code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USER_ERROR)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _add_shared_flags(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show full tracebacks for errors (for bug reports)")
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="only print warnings and errors")


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the flags every entry point shares (`--debug`, `--quiet`)."""
    parser = _Parser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_shared_flags(parser)
    return parser


def add_subcommand(
    commands: argparse._SubParsersAction, name: str, summary: str
) -> argparse.ArgumentParser:
    """A subcommand of a `make_parser` parser; the shared flags work after its name too."""
    parser = commands.add_parser(name, help=summary)
    _add_shared_flags(parser, default=argparse.SUPPRESS)  # absent: the main parser's value
    return parser


def run_main(
    main: Callable[[argparse.Namespace], int | None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse arguments, run `main`, and turn a `UserError` into one line and exit code 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(main(args) or 0)
    except UserError as error:
        if args.debug:
            raise
        sys.stderr.write(f"error: {error}\n")
        return EXIT_USER_ERROR
    except OSError as error:  # a full disk where no atomic write catches it (mkdir, a lock)
        from harness.io import out_of_room_line

        line = out_of_room_line(error)
        if line is None or args.debug:
            raise
        sys.stderr.write(f"error: {line}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
