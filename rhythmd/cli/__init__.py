"""The ``rhythmd`` console command. Each subcommand is a module with ``register(sub)``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from rhythmd import __version__
from rhythmd.errors import ConfigurationError
from rhythmd.interop.types import SourceError

COMMANDS = ["serve", "analyze", "replay", "export", "schedule", "query", "eval", "token"]
"""Modules of this package, in help order; each registers one subcommand."""


class CommandError(Exception):
    """A user-facing failure: printed as ``rhythmd: error: …`` with exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rhythmd", description="rhythmd: a training-rhythm debugger for PyTorch.")
    parser.add_argument("--version", action="version", version=f"rhythmd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"rhythmd.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 success, 1 the command failed, 2 usage or configuration error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"rhythmd: error: {exc}", file=sys.stderr)
        return 2
    except SourceError as exc:
        print(f"rhythmd: error: {exc}", file=sys.stderr)
        return 1
    except CommandError as exc:
        print(f"rhythmd: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
