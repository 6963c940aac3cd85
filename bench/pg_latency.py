"""Round trips per batch on PostgreSQL: ingest straight to the server and through a proxy that
adds network latency, as a database on another machine has.

    python bench/pg_latency.py                      # 50 runs x 30 batches, 0.5 ms each way
    python bench/pg_latency.py --delay-ms 1 --runs 20 --batches 20

The daemon's service layer runs in this process (no HTTP) against a fresh database: once with
one service (one daemon process) and once with two services taking each run's batches in turn
(two replicas behind a round-robin). Each setup runs twice, straight to the server and through
a TCP proxy (a child process) that holds every packet for ``--delay-ms`` in each direction.

Printed per setup: wall time per batch both ways, and the round trips a batch waits for:
(wall through the proxy - wall straight) / (the round trip the proxy adds, measured with
``SELECT 1`` in the same run). The batches are those of ``bench/load.py`` (12 ``train_loss``
points, a ``val_loss`` point every 100 steps, one run in ten blowing up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import create_pg_database, drop_pg_database, free_port
from bench.load import DEFAULT_PG, loss_value, val_loss_value

# ------------------------------------------------------------------------------ the proxy

async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
                ) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            at, data = await queue.get()
            if not data:
                writer.close()
                return
            wait = at + delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)

    task = asyncio.create_task(forward())
    while True:
        data = await reader.read(65536)
        queue.put_nowait((time.monotonic(), data))
        if not data:
            break
    await task


def serve_proxy(listen_port: int, target_port: int, delay_ms: float) -> None:
    """Forward 127.0.0.1:listen_port to 127.0.0.1:target_port, ``delay_ms`` each way."""
    delay = delay_ms / 1000

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(_pipe(cr, sw, delay), _pipe(sr, cw, delay), return_exceptions=True)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ------------------------------------------------------------------------------ measurement

def _batch(run: int, b: int, blow: int | None, phase: int, rng: random.Random) -> Any:
    from rhythmd.batch import parse_metric_batch

    steps = list(range(b * 12, b * 12 + 12))
    series: list[dict[str, Any]] = [{"name": "train_loss", "steps": steps,
                                     "values": [loss_value(s, blow, rng) for s in steps]}]
    val = [s for s in steps if (s + phase) % 100 == 99]
    if val:
        series.append({"name": "val_loss", "steps": val,
                       "values": [val_loss_value(s) for s in val]})
    return parse_metric_batch({"batch_id": f"b{b}", "series": series})


def ingest_wall(url: str, replicas: int, runs: int, batches: int) -> float:
    """Seconds per batch (after 3 warm-up batches per run), ``replicas`` services in turn."""
    from rhythmd.service import Service
    from rhythmd.store import Store

    stores = [Store(url) for _ in range(replicas)]
    for s in stores:
        s.open()
    services = [Service(s) for s in stores]
    rng = random.Random(0)
    tag = os.urandom(3).hex()
    ids = [f"lat-{tag}-{r}" for r in range(runs)]
    blows = [int(0.4 * batches * 12) if r % 10 == 0 else None for r in range(runs)]
    phases = [rng.randrange(100) for _ in range(runs)]
    for rid in ids:
        services[0].create_run(rid, "bench", run_id=rid, config={"total_steps": batches * 12})
    warm = 3
    started = 0.0
    for b in range(batches):
        if b == warm:
            started = time.perf_counter()
        for r, rid in enumerate(ids):
            services[b % replicas].ingest(rid, _batch(r, b, blows[r], phases[r], rng))
    wall = (time.perf_counter() - started) / ((batches - warm) * runs)
    for s in stores:
        s.close()
    return wall


def select_one_rtt(url: str, n: int = 200) -> float:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        for _ in range(20):
            conn.execute(text("SELECT 1"))
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute(text("SELECT 1"))
        rtt = (time.perf_counter() - t0) / n
    engine.dispose()
    return rtt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--batches", type=int, default=30, help="batches per run (3 warm up)")
    ap.add_argument("--delay-ms", type=float, default=0.5, help="proxy delay each way, ms")
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--serve-proxy", nargs=3, metavar=("LISTEN", "TARGET", "DELAY_MS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_proxy:
        listen, target, delay = args.serve_proxy
        serve_proxy(int(listen), int(target), float(delay))
        return 0
    from sqlalchemy.engine import make_url

    url = create_pg_database(args.pg_url)
    parsed = make_url(url)
    port = free_port()
    proxy = subprocess.Popen([sys.executable, __file__, "--serve-proxy", str(port),
                              str(parsed.port or 5432), str(args.delay_ms)])
    try:
        time.sleep(1.0)
        slow_url = parsed.set(port=port).render_as_string(hide_password=False)
        added = select_one_rtt(slow_url) - select_one_rtt(url)
        print(f"PostgreSQL {args.pg_url.rsplit('@', 1)[-1]}, {args.runs} runs x {args.batches} "
              f"batches, proxy {args.delay_ms} ms each way: SELECT 1 round trip "
              f"+{added * 1000:.2f} ms through it; {os.cpu_count()} CPUs\n")
        print(f"{'setup':>22}  {'ms/batch straight':>17}  {'ms/batch proxy':>14}  "
              f"{'round trips/batch':>17}")
        for replicas in (1, 2):
            straight = ingest_wall(url, replicas, args.runs, args.batches)
            slow = ingest_wall(slow_url, replicas, args.runs, args.batches)
            label = "1 process" if replicas == 1 else "2 replicas, in turn"
            print(f"{label:>22}  {straight * 1000:17.2f}  {slow * 1000:14.2f}  "
                  f"{(slow - straight) / added:17.1f}")
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        drop_pg_database(args.pg_url, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
