"""Command line: a thin layer that parses argv and calls the Python API.

Errors a user can fix (bad config, missing file, wrong checkpoint, unreachable board) print one
clear message and exit with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

from orchestrator.commands import COMMANDS
from common.errors import UserError
from common.redact import RedactingFilter, redact
from orchestrator.interrupts import INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator",
                                     description="EdgeSweep: KD + quantization sweeps for detectors on ARM boards.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())  # no password of a URI reaches the terminal or a log file
    try:
        return int(args.run(args) or 0)
    except (UserError, FileNotFoundError) as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
