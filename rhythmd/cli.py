"""The ``rhythmd`` console command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rhythmd import __version__
from rhythmd.config import Settings
from rhythmd.errors import ConfigurationError
from rhythmd.store.engine import is_sqlite


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    env = Settings()
    p = sub.add_parser(
        "serve",
        help="start the daemon (uvicorn)",
        description="Start the rhythmd daemon. Each flag defaults to its RHYTHMD_* environment "
                    "variable, then to the built-in default.",
    )
    p.add_argument("--host", default=env.host,
                   help=f"address to bind [RHYTHMD_HOST, default 127.0.0.1; now {env.host}]")
    p.add_argument("--port", type=int, default=env.port,
                   help=f"TCP port [RHYTHMD_PORT, default 8000; now {env.port}]")
    p.add_argument("--database-url", default=env.database_url,
                   help="SQLAlchemy URL [RHYTHMD_DATABASE_URL, default sqlite:///./rhythmd.db]: "
                        "a SQLite file (single process) or postgresql+psycopg://user@host/db "
                        f"(several processes); now {env.database_url}")
    p.add_argument("--workers", type=int, default=env.workers,
                   help="daemon processes [RHYTHMD_WORKERS, default 1]; more than one needs "
                        "PostgreSQL")
    p.add_argument("--log-level", default=env.log_level,
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="log level [RHYTHMD_LOG_LEVEL, default info]")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    if args.workers > 1 and is_sqlite(args.database_url):
        raise ConfigurationError(
            f"--workers {args.workers} needs PostgreSQL: SQLite is the single-process mode. "
            "Run one worker, or set RHYTHMD_DATABASE_URL=postgresql+psycopg://user@host/db."
        )
    # Worker processes build the app from the environment, so pass the flags through it.
    os.environ["RHYTHMD_DATABASE_URL"] = args.database_url
    os.environ["RHYTHMD_LOG_LEVEL"] = args.log_level
    uvicorn.run("rhythmd.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rhythmd", description="rhythmd: a training-rhythm debugger for PyTorch.")
    parser.add_argument("--version", action="version", version=f"rhythmd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
