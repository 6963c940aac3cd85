"""Ingest throughput of a real rhythmd daemon against the floor, measured in the same run.

    python bench/ingest.py                       # 1,000,000 points, 1 client, batches of 1,000
    python bench/ingest.py --clients 4 --batch 500 --backends sqlite,postgresql

For each backend it starts ``uvicorn rhythmd.app:app`` (one worker) on a fresh database, streams
N points from C concurrent clients (threads with persistent HTTP connections; bodies are
encoded before the clock starts, so the client costs little), verifies that every point was
stored, and prints points/s and p50/p99 request latency. The floor is a bare FastAPI endpoint
that parses the same bodies and does one ``executemany`` into a SQLite file
(``bench/_floor_app.py``); our throughput is printed as a ratio of it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    create_pg_database,
    drop_pg_database,
    free_port,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def start(app: str, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the daemon
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        # The daemon's log goes to a file: an unread pipe fills up and blocks the daemon.
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    log.seek(0)
    raise RuntimeError(f"{app} did not start: {log.read().decode()[-2000:]}")


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            ) -> tuple[int, bytes]:
    conn.request(method, path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


NONFINITE_EVERY = 1000
"""One point in this many is NaN (0: none); set by --nonfinite-every."""


def _is_nan_step(s: int) -> bool:
    return NONFINITE_EVERY > 0 and s % NONFINITE_EVERY == NONFINITE_EVERY - 1


def make_bodies(n_points: int, batch: int, clients: int, run_ids: list[str]) -> list[list]:
    """Per client, its (path, body) list: train_loss with 1 non-finite value in 1,000."""
    per_client: list[list] = [[] for _ in range(clients)]
    n_batches = math.ceil(n_points / batch)
    for b in range(n_batches):
        c = b % clients
        start = (b // clients) * batch
        size = min(batch, n_points - b * batch)
        steps = list(range(start, start + size))
        values = [float("nan") if _is_nan_step(s) else 2.0 / (1 + 0.01 * s) for s in steps]
        body = json.dumps({"batch_id": f"c{c}-b{b}", "series": [
            {"name": "train_loss", "steps": steps, "values": values}]}).encode()
        per_client[c].append((f"/v1/runs/{run_ids[c]}/metrics", body))
    return per_client


def drive(port: int, per_client: list[list]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(items: list) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for path, body in items:
            t0 = time.perf_counter()
            status, text = request(conn, "POST", path, body)
            mine.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"{status} {text[:200]!r}")
                return
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(items,)) for items in per_client]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"requests failed: {errors[:3]}")
    return elapsed, latencies


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run_floor(args: argparse.Namespace, tmp: Path) -> dict:
    db = tmp / "floor.db"
    proc, port = start("bench._floor_app:app", {"FLOOR_DB": str(db)})
    try:
        bodies = make_bodies(args.points, args.batch, args.clients, ["floor"] * args.clients)
        elapsed, lat = drive(port, bodies)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        stored = json.loads(request(conn, "GET", "/count")[1])["points"]
        assert stored == args.points, (stored, args.points)
    finally:
        proc.terminate()
        proc.wait()
    return {"name": "floor (bare executemany, SQLite)", "pps": args.points / elapsed,
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}


def run_rhythmd(args: argparse.Namespace, url: str, label: str, env: dict[str, str]) -> dict:
    proc, port = start("rhythmd.app:app", {"RHYTHMD_DATABASE_URL": url, **env})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        run_ids = []
        for c in range(args.clients):
            status, text = request(conn, "POST", "/v1/runs",
                                   json.dumps({"name": f"bench-{c}", "config": {
                                       # the planned length, as the client hook sends it
                                       "total_steps": args.points // args.clients}}).encode())
            assert status == 201, text
            run_ids.append(json.loads(text)["run_id"])
        bodies = make_bodies(args.points, args.batch, args.clients, run_ids)
        elapsed, lat = drive(port, bodies)
        stored = 0
        conn = http.client.HTTPConnection("127.0.0.1", port)  # the first one idled out
        for rid in run_ids:
            _, text = request(conn, "GET", f"/v1/runs/{rid}/metrics")
            stored += sum(m["points"] for m in json.loads(text)["metrics"])
            _, text = request(conn, "GET", f"/v1/runs/{rid}/metrics/train_loss")
            got = json.loads(text)
            assert got["total_points"] == len(got["steps"])
            assert got["values"].count("NaN") == sum(1 for s in got["steps"] if _is_nan_step(s))
        assert stored == args.points, (stored, args.points)
    finally:
        proc.terminate()
        proc.wait()
    return {"name": label, "pps": args.points / elapsed, "p50": pct(lat, 0.5),
            "p99": pct(lat, 0.99)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--points", type=int, default=1_000_000, help="points per measurement")
    p.add_argument("--clients", type=int, default=1, help="concurrent clients (one run each)")
    p.add_argument("--batch", type=int, default=1_000, help="points per request")
    p.add_argument("--nonfinite-every", type=int, default=NONFINITE_EVERY,
                   help="one NaN loss every N points (default 1000: with analysis on, every "
                        "batch then opens a divergence, the analysis path's worst case; 0 for "
                        "a healthy stream)")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--pg-url", default=os.environ.get("RHYTHMD_TEST_POSTGRES_URL", DEFAULT_PG))
    args = p.parse_args()
    globals()["NONFINITE_EVERY"] = args.nonfinite_every
    print(f"ingest: {args.points:,} points, {args.clients} client(s), batches of {args.batch:,}; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        floor = run_floor(args, tmp)
        results.append(floor)
        for backend in args.backends.split(","):
            for analysis in ("1", "0"):
                label = "analysis on" if analysis == "1" else "analysis off"
                env = {"RHYTHMD_ANALYSIS": analysis}
                if backend == "sqlite":
                    results.append(run_rhythmd(args, f"sqlite:///{tmp / f'r{analysis}.db'}",
                                               f"rhythmd, SQLite, {label}", env))
                elif backend == "postgresql":
                    url = create_pg_database(args.pg_url)
                    try:
                        results.append(run_rhythmd(args, url, f"rhythmd, PostgreSQL, {label}",
                                                   env))
                    finally:
                        drop_pg_database(args.pg_url, url)
    print(f"{'':36} {'points/s':>12} {'x floor':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r['name']:36} {r['pps']:12,.0f} {r['pps'] / floor['pps']:8.2f} "
              f"{r['p50'] * 1e3:8.2f} {r['p99'] * 1e3:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
