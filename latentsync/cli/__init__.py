"""The `latentsync` command: one sub-command per job; user errors print as one line plus a hint."""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..errors import InputError, LatentSyncError
from . import avatar_cmds, data_cmds, eval_cmd, infer, serve_cmds, train_cmds, weights_cmds

# Each module adds its sub-commands to the parser; `args.run(args)` does the work.
COMMAND_MODULES = [infer, avatar_cmds, data_cmds, train_cmds, weights_cmds, eval_cmd, serve_cmds]


class _Parser(argparse.ArgumentParser):
    """Reports a mistyped command line like any other user error: one line and a hint (sub-commands inherit it)."""

    def error(self, message: str):
        raise InputError(message, f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="latentsync",
        description="Audio-driven lip sync of real videos (LatentSync 1.5 / 1.6 compatible).",
    )
    parser.add_argument("--version", action="version", version=f"latentsync {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
        args.run(args)
    except LatentSyncError as exc:
        if args is not None and args.debug:
            raise
        print(f"latentsync: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentsync: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
