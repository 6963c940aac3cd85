"""``rhythmd token create|list|revoke``: manage API tokens directly in the database."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rhythmd.config import Settings

if TYPE_CHECKING:
    from rhythmd.service import Service


def register(sub: argparse._SubParsersAction) -> None:
    env = Settings()
    p = sub.add_parser(
        "token", help="create, list or revoke API tokens",
        description="Manage the bearer tokens the daemon accepts with RHYTHMD_AUTH=required. "
                    "Works on the database directly (run it where the daemon's database is "
                    "reachable). Tokens are stored hashed; a new token is printed once.",
        epilog="scopes: ingest (a training job: create runs, send metrics, ack "
               "recommendations), read (queries and pages), steer (read + issue "
               "recommendations/stops by hand), admin (everything, tokens included).")
    p.add_argument("--database-url", default=env.database_url,
                   help="SQLAlchemy URL [RHYTHMD_DATABASE_URL]")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a token and print it once")
    c.add_argument("--project", required=True, help='project it is valid for, or "*" for all')
    c.add_argument("--scope", required=True, choices=["ingest", "read", "steer", "admin"])
    c.add_argument("--description", default=None)
    c.set_defaults(func=_create)
    ls = tsub.add_parser("list", help="list tokens (never their secret)")
    ls.set_defaults(func=_list)
    r = tsub.add_parser("revoke", help="revoke a token by id")
    r.add_argument("token_id")
    r.set_defaults(func=_revoke)


def _service(url: str) -> Service:
    from rhythmd.service import Service
    from rhythmd.store import Store
    from rhythmd.store.engine import is_sqlite
    from rhythmd.store.schema import init_schema

    store = Store(url)
    if is_sqlite(url):  # do not take the daemon's process lock: only touch the tokens table
        init_schema(store.engine)
    else:
        store.open()
    return Service(store, analysis=False)


def _create(args: argparse.Namespace) -> int:
    service = _service(args.database_url)
    try:
        out = service.create_token(args.project, args.scope, args.description)
    finally:
        service.store.close()
    print(out["token"])
    print(f"# id {out['token_id']}, scope {out['scope']}, project {out['project']}: "
          "store it now, it is not shown again", flush=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    service = _service(args.database_url)
    try:
        rows = service.list_tokens()
    finally:
        service.store.close()
    for t in rows:
        state = "revoked" if t["revoked"] else "active"
        print(f"{t['token_id']}  {t['scope']:<7} {t['project']:<20} {state:<8} "
              f"{t['description'] or ''}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from rhythmd.cli import CommandError
    from rhythmd.errors import NotFoundError

    service = _service(args.database_url)
    try:
        service.revoke_token(args.token_id)
    except NotFoundError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        service.store.close()
    print(f"revoked {args.token_id}")
    return 0
