"""``rhythmd serve``: start the daemon."""

from __future__ import annotations

import argparse
import os

from rhythmd.config import Settings
from rhythmd.errors import ConfigurationError
from rhythmd.store.engine import is_sqlite


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction,
                   default=env.access_log,
                   help="log every HTTP request [RHYTHMD_ACCESS_LOG, default off; rejected "
                        "requests are logged either way]")
    p.add_argument("--insecure", action="store_true", default=env.insecure,
                   help="serve a non-loopback --host without authentication (RHYTHMD_INSECURE); "
                        "prefer RHYTHMD_AUTH=required with tokens")
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
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One /metrics scrape must see every worker: prometheus-client's multiprocess mode.
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rhythmd-prom-")
    # Worker processes build the app from the environment, so pass the flags through it.
    os.environ["RHYTHMD_DATABASE_URL"] = args.database_url
    os.environ["RHYTHMD_BIND_HOST"] = args.host
    if args.insecure:
        os.environ["RHYTHMD_INSECURE"] = "1"
    os.environ["RHYTHMD_LOG_LEVEL"] = args.log_level
    uvicorn.run("rhythmd.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, access_log=args.access_log)
    return 0
