"""Ingest throughput of a real rhythmd daemon against the floor, measured in the same run.

    python bench/ingest.py                     # 500,000 points per stream, SQLite
    python bench/ingest.py --postgresql        # also PostgreSQL (= --backends sqlite,postgresql)
    python bench/ingest.py --streams realistic --clients 4 --batch 500
    python bench/ingest.py --profile realistic # in-process cProfile of the same stream

Three named streams (``rhythmd.eval.streams``), each measured against its own floor in the
same run, with analysis on and off:

- ``healthy``: ``train_loss`` only, one run per client, ``total_steps`` declared;
- ``divergent``: the same with a NaN loss every 1,000 steps (with analysis on every batch
  opens and closes a critical divergence the policy answers: the analysis path's worst case);
- ``realistic``: what a training hook sends: train loss and LR every step, a validation loss
  every 50 steps, ``total_steps`` declared, ten runs round robin, one in ten diverging.

For each setup it starts ``uvicorn rhythmd.app:app`` (one worker) on a fresh database, streams
the bodies from C concurrent clients (threads with persistent HTTP connections; bodies are
encoded before the clock starts), verifies that every point (and every non-finite one) was
stored, and prints points/s and p50/p99 request latency. The floor is a bare FastAPI endpoint
that parses the same bodies and does one ``executemany`` into a SQLite file
(``bench/_floor_app.py``); throughput is printed as a ratio of the floor of the same stream.

``--profile STREAM`` runs the stream through ``Service.ingest`` in this process (no HTTP, a
fresh SQLite file, or with ``--postgresql`` a fresh PostgreSQL database; analysis on) under
cProfile and prints the top entries by cumulative and by own time; ``--inprocess STREAM`` does
the same without cProfile and prints the CPU time (for a sampling profiler such as py-spy).
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import json
import math
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import create_pg_database, drop_pg_database, free_port
from rhythmd.eval.streams import STREAMS, Stream, ingest_stream

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


def encode(stream: Stream, run_ids: list[str], clients: int) -> list[list[tuple[str, bytes]]]:
    """Per client, its (path, body) list in stream order; run ``i`` goes to client i % C."""
    per_client: list[list[tuple[str, bytes]]] = [[] for _ in range(clients)]
    for i, j in stream.order:
        body = json.dumps(stream.runs[i].bodies[j]).encode()
        per_client[i % clients].append((f"/v1/runs/{run_ids[i]}/metrics", body))
    return per_client


def drive(port: int, per_client: list[list[tuple[str, bytes]]]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(items: list[tuple[str, bytes]]) -> None:
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


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run_floor(stream: Stream, clients: int, tmp: Path) -> dict:
    db = tmp / f"floor-{stream.name}.db"
    proc, port = start("bench._floor_app:app", {"FLOOR_DB": str(db)})
    try:
        bodies = encode(stream, ["floor"] * len(stream.runs), clients)
        cpu0 = cpu_seconds(proc)
        elapsed, lat = drive(port, bodies)
        cpu = cpu_seconds(proc) - cpu0
        conn = http.client.HTTPConnection("127.0.0.1", port)
        stored = json.loads(request(conn, "GET", "/count")[1])["points"]
        assert stored == stream.n_points, (stored, stream.n_points)
    finally:
        proc.terminate()
        proc.wait()
    return {"setup": "floor (bare executemany, SQLite)", "pps": stream.n_points / elapsed,
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "cpu_us": 1e6 * cpu / stream.n_points}


def _verify(conn: http.client.HTTPConnection, stream: Stream, run_ids: list[str]) -> None:
    """Every point of every series stored, the non-finite ones as non-finite."""
    for rid, run in zip(run_ids, stream.runs, strict=True):
        _, text = request(conn, "GET", f"/v1/runs/{rid}/metrics")
        got = {m["name"]: m["points"] for m in json.loads(text)["metrics"]}
        assert got == run.points, (rid, got, run.points)
        for name, bad in run.nonfinite.items():
            _, text = request(conn, "GET", f"/v1/runs/{rid}/metrics/{name}")
            series = json.loads(text)
            assert series["total_points"] == len(series["steps"]) == run.points[name]
            assert sum(isinstance(v, str) for v in series["values"]) == bad, (rid, name)


def run_rhythmd(stream: Stream, clients: int, url: str, label: str, env: dict[str, str]
                ) -> dict:
    proc, port = start("rhythmd.app:app", {"RHYTHMD_DATABASE_URL": url, **env})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        run_ids = []
        for i, run in enumerate(stream.runs):
            status, text = request(conn, "POST", "/v1/runs", json.dumps({
                "name": f"bench-{stream.name}-{i}",
                # the planned length, as the client hook sends it
                "config": {"total_steps": run.total_steps}}).encode())
            assert status == 201, text
            run_ids.append(json.loads(text)["run_id"])
        bodies = encode(stream, run_ids, clients)
        cpu0 = cpu_seconds(proc)
        elapsed, lat = drive(port, bodies)
        cpu = cpu_seconds(proc) - cpu0
        _verify(http.client.HTTPConnection("127.0.0.1", port), stream, run_ids)
    finally:
        proc.terminate()
        proc.wait()
    return {"setup": label, "pps": stream.n_points / elapsed, "p50": pct(lat, 0.5),
            "p99": pct(lat, 0.99), "cpu_us": 1e6 * cpu / stream.n_points}


def measure(stream: Stream, args: argparse.Namespace, tmp: Path) -> list[dict]:
    """The stream's floor, then rhythmd per backend with analysis on and off."""
    out = [run_floor(stream, args.clients, tmp)]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.postgresql and "postgresql" not in backends:
        backends.append("postgresql")
    for backend in backends:
        for analysis in ("1", "0"):
            label = f"rhythmd, {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, " \
                    f"analysis {'on' if analysis == '1' else 'off'}"
            env = {"RHYTHMD_ANALYSIS": analysis}
            if backend == "sqlite":
                url = f"sqlite:///{tmp / f'{stream.name}-{analysis}.db'}"
                out.append(run_rhythmd(stream, args.clients, url, label, env))
            else:
                url = create_pg_database(args.pg_url)
                try:
                    out.append(run_rhythmd(stream, args.clients, url, label, env))
                finally:
                    drop_pg_database(args.pg_url, url)
    return out


def profile(stream: Stream, top: int, cprofile: bool = True, url: str | None = None) -> None:
    """The stream through ``Service.ingest`` in this process, under cProfile (or bare, for a
    sampling profiler: ``py-spy record -- python bench/ingest.py --inprocess STREAM``)."""
    from rhythmd.batch import parse_metric_batch
    from rhythmd.service import Service
    from rhythmd.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(url or f"sqlite:///{tmp}/p.db")
        store.open()
        service = Service(store)
        ids = [service.create_run(f"p{i}", config={"total_steps": r.total_steps})[0]["run_id"]
               for i, r in enumerate(stream.runs)]
        batches = [(ids[i], parse_metric_batch(stream.runs[i].bodies[j])) for i, j in stream.order]
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        c0 = time.process_time()
        if cprofile:
            prof.enable()
        for rid, b in batches:
            service.ingest(rid, b)
        prof.disable()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        service.close()
    print(f"in-process {stream.name}: {stream.n_points:,} points in {len(batches):,} batches, "
          f"{elapsed:.2f} s ({cpu:.2f} s CPU){' under cProfile' if cprofile else ''}: "
          f"{stream.n_points / cpu:,.0f} points per CPU second")
    if not cprofile:
        return
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--points", type=int, default=500_000, help="points per stream (500,000)")
    p.add_argument("--clients", type=int, default=1, help="concurrent clients (1)")
    p.add_argument("--batch", type=int, default=1_000, help="points per request (1,000)")
    p.add_argument("--streams", default=",".join(STREAMS),
                   help=f"comma-separated, of {', '.join(STREAMS)} (all)")
    p.add_argument("--backends", default="sqlite",
                   help="comma-separated, of sqlite, postgresql (sqlite)")
    p.add_argument("--postgresql", action="store_true",
                   help="the same as --backends sqlite,postgresql")
    p.add_argument("--pg-url", default=os.environ.get("RHYTHMD_TEST_POSTGRES_URL", DEFAULT_PG))
    p.add_argument("--profile", metavar="STREAM", choices=STREAMS,
                   help="in-process cProfile of one stream instead of the table")
    p.add_argument("--inprocess", metavar="STREAM", choices=STREAMS,
                   help="the same without cProfile (its CPU time; for py-spy)")
    p.add_argument("--top", type=int, default=30, help="entries per profile table (30)")
    args = p.parse_args()
    if args.profile or args.inprocess:
        stream = ingest_stream(args.profile or args.inprocess, args.points, args.batch,
                               args.clients)
        if "postgresql" not in args.backends and not args.postgresql:
            profile(stream, args.top, cprofile=bool(args.profile))
            return 0
        url = create_pg_database(args.pg_url)
        try:
            profile(stream, args.top, cprofile=bool(args.profile), url=url)
        finally:
            drop_pg_database(args.pg_url, url)
        return 0
    for b in args.backends.split(","):
        if b.strip() not in ("sqlite", "postgresql", ""):
            p.error(f"unknown backend {b!r}")
    names = [s.strip() for s in args.streams.split(",") if s.strip()]
    for n in names:
        if n not in STREAMS:
            p.error(f"unknown stream {n!r}")
    print(f"ingest: {args.points:,} points per stream, {args.clients} client(s), batches of "
          f"{args.batch:,}; python {sys.version.split()[0]}, {os.cpu_count()} cores")
    rows: list[tuple[str, dict, dict]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for n in names:
            stream = ingest_stream(n, args.points, args.batch, args.clients)
            res = measure(stream, args, Path(tmpdir))
            rows.extend((n, r, res[0]) for r in res)
    print(f"{'stream':10} {'':36} {'points/s':>12} {'x floor':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'cpu us/pt':>10} {'cpu x floor':>12}")
    for n, r, floor in rows:
        print(f"{n:10} {r['setup']:36} {r['pps']:12,.0f} {r['pps'] / floor['pps']:8.2f} "
              f"{r['p50'] * 1e3:8.2f} {r['p99'] * 1e3:8.2f} {r['cpu_us']:10.2f} "
              f"{r['cpu_us'] / floor['cpu_us'] if floor['cpu_us'] else math.nan:12.2f}")
    print("cpu us/pt: the server process's CPU time per point while streaming (less sensitive "
          "than points/s to other load on the machine); cpu x floor: that over the floor's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
