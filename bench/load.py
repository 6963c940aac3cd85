"""Sustained load: R concurrent training runs streaming to a real rhythmd daemon.

    python bench/load.py                                # 200 runs x 50 points/s, 30 s, both
    python bench/load.py --backends sqlite --runs 100 --duration 20
    python bench/load.py --short                        # CI smoke: 20 runs, 5 s

Each run streams what the client hook sends: ``train_loss`` and ``lr`` at every step (a fixed
rate, ``--rate`` steps/s; warmup then cosine decay over the run's declared ``total_steps``) and a
``val_loss`` point at its own cadence and phase (every 50, 100 or 200 steps, drawn per run;
``--val-every N`` gives every run the same cadence), and flushes every ``--flush-ms`` (one
``POST /v1/runs/{id}/metrics`` per flush, with a ``batch_id``). One run in ten blows up at 40%
of the duration, so the daemon has divergences to diagnose. The driver is one process: asyncio
with a minimal keep-alive HTTP/1.1 client (one connection per run and daemon), so it costs
little CPU next to the daemon on a small machine.

Backends:

- ``sqlite``: one daemon process on a fresh SQLite file (the single-process mode).
- ``postgresql``: two daemon processes on one fresh PostgreSQL database. ``--balance
  affine`` (default): each run sends all its batches to one of them, drawn per run: what
  ``rhythmd serve --workers 2`` gives the client hook, whose one keep-alive connection stays
  with the worker that accepted it. ``--balance round-robin``: the batches of every run
  alternate between the two (each run starting at a random one), as a per-request balancer
  would do; each process then also replays the batches the other stored before it analyses
  its own (the worst case: docs/daemon.md advises against it).
  Afterwards the exact same batches are replayed into one daemon process on another fresh
  database, and the diagnoses of every run must be the same (wall times ignored).

Figures: sustained points/s (stored points / streaming time), p50/p99/max ingest latency,
analysis lag (from the send of the batch holding the step where a divergence was detected to
that diagnosis being visible on ``GET /v1/runs/{id}/diagnoses``; the analysis runs inside the
ingest transaction, so this is the ingest latency plus one read), daemon CPU in cores, and the
final check that no point was lost (``n_points`` of every run equals the points acknowledged
and sent). Exit status 1 if a point was lost, a request failed, or diagnoses differ; with
``--max-p99-ms`` also if p99 is above it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import create_pg_database, drop_pg_database, free_port
from rhythmd.eval.compare import strip_wall_times

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = os.environ.get("RHYTHMD_TEST_POSTGRES_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MAX_DURATION_S = 60.0


# ------------------------------------------------------------------------------ daemons

class DaemonProc:
    """``uvicorn rhythmd.app:app`` (one process) on a free port."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        self.port = free_port()
        self.database_url = database_url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DaemonProc:
        env = {**os.environ, "RHYTHMD_DATABASE_URL": self.database_url,
               "RHYTHMD_LOG_LEVEL": "warning"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "rhythmd.app:app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
                cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daemon did not become healthy; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


# ------------------------------------------------------------------------------ HTTP client
class HttpConn:
    """A minimal keep-alive HTTP/1.1 client connection (JSON bodies, Content-Length only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, method: str, path: str, body: bytes | None = None,
                      timeout: float = 30.0) -> tuple[int, bytes]:
        for attempt in range(2):  # one reconnect if the kept-alive connection was closed
            try:
                return await asyncio.wait_for(self._request(method, path, body), timeout)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ------------------------------------------------------------------------------ streams
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def loss_value(step: int, blow_step: int | None, rng: random.Random) -> float | str:
    v = 2.0 * math.exp(-step / 400) + 0.3 + 0.02 * (rng.random() - 0.5)
    if blow_step is not None and step >= blow_step:
        v *= 1.25 ** min(step - blow_step + 1, 400)  # 1.25**400 > 1e38: Infinity below
    return v if v < 1e30 else "Infinity"


def val_loss_value(step: int) -> float:
    """The validation loss every run reports (it never blows up)."""
    return round(2.2 * math.exp(-step / 500) + 0.35, 6)


def lr_value(step: int, total_steps: int) -> float:
    """The LR a run's scheduler reports: linear warmup over 2 % of the run, then cosine."""
    warm = max(1, total_steps // 50)
    if step < warm:
        return 1e-3 * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total_steps - warm))
    return max(1e-3 * 0.5 * (1 + math.cos(math.pi * t)), 1e-6)


VAL_CADENCES = (50, 100, 200)
"""Validation cadences (steps) drawn per run unless ``--val-every`` fixes one."""


@dataclass
class RunStats:
    run_id: str
    blow_step: int | None
    config: dict[str, Any]
    val_every: int = 100  # this run's validation cadence (steps)
    val_phase: int = 0  # this run evaluates at steps s with (s + val_phase) % val_every == last
    bodies: list[bytes] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)
    batch_last_step: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    points_sent: int = 0
    points_acked: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    diagnosis_lag: float | None = None
    detected_step: int | None = None


async def stream_run(rs: RunStats, conns: list[HttpConn], t0: float, args: argparse.Namespace,
                     stop_at: float) -> None:
    """One training run: every flush interval, send the steps that are due since the last."""
    rng = random.Random(rs.run_id)
    flush = args.flush_ms / 1000
    # stagger the runs' flush phases over one interval, as independent jobs would be
    start = t0 + rng.random() * flush
    next_step = 0
    k = 0  # flush ticks since start
    b = 0  # batches sent
    # the daemon that gets the run's first batch: jobs that start independently are not in
    # step; with the same first daemon for all, every run would send its k-th batch to daemon
    # k % 2 within the same flush interval, and each daemon would take all 200 runs in one
    # interval and none in the next
    first = random.Random(f"{rs.run_id}/daemon").randrange(len(conns))
    watch = rs.blow_step is not None
    while True:
        k += 1
        tick = start + k * flush
        if tick > stop_at:
            break
        now = time.monotonic()
        if tick > now:
            await asyncio.sleep(tick - now)
        else:  # behind (the daemon is slower than the stream): skip the missed ticks
            k = max(k, int((now - start) / flush))
        due = int((time.monotonic() - start) * args.rate)
        if due <= next_step:
            continue
        steps = list(range(next_step, due))
        next_step = due
        total = int(rs.config["total_steps"])
        series: list[dict[str, Any]] = [
            {"name": "train_loss", "steps": steps,
             "values": [loss_value(s, rs.blow_step, rng) for s in steps]},
            {"name": "lr", "steps": steps, "values": [lr_value(s, total) for s in steps]}]
        val = [s for s in steps if (s + rs.val_phase) % rs.val_every == rs.val_every - 1]
        if val:
            series.append({"name": "val_loss", "steps": val, "values": [
                val_loss_value(s) for s in val]})
        n = sum(len(x["steps"]) for x in series)
        body = json.dumps({"batch_id": f"b{b}", "series": series},
                          separators=(",", ":")).encode()
        conn = conns[(first + b) % len(conns) if args.balance == "round-robin" else first]
        b += 1
        sent = time.monotonic()
        try:
            status, data = await conn.request("POST", f"/v1/runs/{rs.run_id}/metrics", body)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            rs.errors.append(f"{type(exc).__name__}: {exc}")
            return
        done = time.monotonic()
        rs.bodies.append(body)
        rs.send_times.append(sent)
        rs.batch_last_step.append(steps[-1])
        rs.points_sent += n
        if status != 200:
            rs.errors.append(f"{status}: {data[:200]!r}")
            return
        rs.latencies.append(done - sent)
        answer = json.loads(data)
        rs.points_acked += int(answer["accepted"]) if not answer["duplicate"] else 0
        rs.duplicates += bool(answer["duplicate"])
        if watch and steps[-1] >= rs.blow_step:  # type: ignore[operator]
            watch = not await check_diagnosis(rs, conn, done)


async def check_diagnosis(rs: RunStats, conn: HttpConn, now: float) -> bool:
    """After an ack past the blow-up: is the divergence visible? Record the lag if so."""
    status, data = await conn.request("GET", f"/v1/runs/{rs.run_id}/diagnoses?kind=divergence")
    if status != 200:
        return False
    found = json.loads(data)["diagnoses"]
    if not found:
        return False
    seen = time.monotonic()
    step = int(found[0]["detected_at_step"])
    rs.detected_step = step
    # the batch that carried the detection step
    for sent, last in zip(rs.send_times, rs.batch_last_step, strict=True):
        if last >= step:
            rs.diagnosis_lag = seen - sent
            break
    return True


async def run_load(ports: list[int], args: argparse.Namespace, tag: str,
                   cpu_probe: Any) -> dict[str, Any]:
    """Create the runs, stream for ``args.duration`` seconds, verify, and summarise."""
    control = HttpConn(ports[0])
    runs: list[RunStats] = []
    total_steps = int(args.rate * args.duration)
    for i in range(args.runs):
        rid = f"load-{tag}-{i:04d}-{uuid.uuid4().hex[:6]}"
        config = {"total_steps": total_steps}
        body = json.dumps({"name": f"load-{i}", "project": "bench", "run_id": rid,
                           "config": config}).encode()
        status, data = await control.request("POST", "/v1/runs", body)
        if status not in (200, 201):
            raise RuntimeError(f"create run: {status} {data[:200]!r}")
        blow = int(0.4 * total_steps) if i % 10 == 0 else None
        draw = random.Random(rid)
        every = args.val_every or draw.choice(VAL_CADENCES)
        phase = draw.randrange(every) if args.val_phase == "random" else 0
        runs.append(RunStats(rid, blow, config, every, phase))
    conns = [[HttpConn(p) for p in ports] for _ in runs]
    cpu0 = cpu_probe()
    driver0 = time.process_time()
    t0 = time.monotonic() + 0.2
    stop_at = t0 + args.duration
    await asyncio.gather(*(stream_run(rs, conns[i], t0, args, stop_at)
                           for i, rs in enumerate(runs)))
    elapsed = time.monotonic() - t0
    cpu = cpu_probe() - cpu0
    driver_cpu = time.process_time() - driver0
    for cs in conns:
        for c in cs:
            c.close()
    # no point lost: every run holds exactly what was sent and acknowledged
    lost = 0
    for rs in runs:
        status, data = await control.request("GET", f"/v1/runs/{rs.run_id}")
        stored = json.loads(data)["n_points"] if status == 200 else -1
        if stored != rs.points_sent or stored != rs.points_acked:
            lost += max(rs.points_sent - max(stored, 0), 0) or 1
            rs.errors.append(f"stored {stored}, sent {rs.points_sent}, acked {rs.points_acked}")
    control.close()
    lat = [x for rs in runs for x in rs.latencies]
    if args.dump_latencies:  # [seconds since start, latency] per request, to find bursts
        Path(args.dump_latencies).write_text(json.dumps(
            [[t - t0, x] for rs in runs
             for t, x in zip(rs.send_times, rs.latencies, strict=False)]))
    # after the first second: without the burst of every run's first batches (new series,
    # cold analyzers on both daemons), which a sweep starting at once costs
    later = [x for rs in runs for t, x in zip(rs.send_times, rs.latencies, strict=False)
             if t - t0 >= 1.0]
    lags = [rs.diagnosis_lag for rs in runs if rs.diagnosis_lag is not None]
    points = sum(rs.points_acked for rs in runs)
    return {
        "runs": runs, "elapsed": elapsed, "points": points, "requests": len(lat),
        "p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat, default=0.0),
        "p99_later": percentile(later, 99),
        "lag_p50": percentile(lags, 50), "lag_max": max(lags, default=float("nan")),
        "diverging": sum(rs.blow_step is not None for rs in runs), "detected": len(lags),
        "lost": lost, "errors": sum(len(rs.errors) for rs in runs), "cpu": cpu / elapsed,
        "driver_cpu": driver_cpu / elapsed,
    }


async def replay(port: int, runs: list[RunStats], concurrency: int = 32) -> list[str]:
    """Send every run's recorded batches, in order, to one daemon; return problems."""
    problems: list[str] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(rs: RunStats) -> None:
        async with sem:
            conn = HttpConn(port)
            for body in rs.bodies:
                status, data = await conn.request("POST", f"/v1/runs/{rs.run_id}/metrics", body)
                if status != 200:
                    problems.append(f"replay {rs.run_id}: {status} {data[:200]!r}")
                    break
            conn.close()

    control = HttpConn(port)
    for rs in runs:
        body = json.dumps({"name": "replay", "project": "bench", "run_id": rs.run_id,
                           "config": rs.config}).encode()
        status, data = await control.request("POST", "/v1/runs", body)
        if status not in (200, 201):
            problems.append(f"replay create {rs.run_id}: {status} {data[:200]!r}")
    control.close()
    await asyncio.gather(*(one(rs) for rs in runs))
    return problems


async def fetch_diagnoses(port: int, run_ids: list[str]) -> dict[str, Any]:
    conn = HttpConn(port)
    out = {}
    for rid in run_ids:
        status, data = await conn.request("GET", f"/v1/runs/{rid}/diagnoses")
        out[rid] = strip_wall_times(json.loads(data)["diagnoses"]) if status == 200 else status
    conn.close()
    return out


# ------------------------------------------------------------------------------ main
def bench_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One backend: start its daemon(s), stream, check; on PostgreSQL also the replay."""
    daemons: list[DaemonProc] = []
    databases: list[str] = []
    try:
        if backend == "sqlite":
            url = f"sqlite:///{workdir / 'load.db'}"
            daemons = [DaemonProc(url, workdir / "sqlite.log").start()]
        else:
            url = create_pg_database(args.pg_url)
            databases.append(url)
            daemons = [DaemonProc(url, workdir / f"pg{i}.log").start() for i in range(2)]

        def cpu() -> float:
            return sum(d.cpu_seconds() for d in daemons)

        res = asyncio.run(run_load([d.port for d in daemons], args, backend[:2], cpu))
        res["backend"] = backend
        res["procs"] = len(daemons)
        res["same_diagnoses"] = None
        if backend != "sqlite":
            res.update(compare_with_one_process(res["runs"], daemons[0].port, args, workdir,
                                                databases))
        return res
    finally:
        for d in daemons:
            d.stop()
        for db in databases:
            try:
                drop_pg_database(args.pg_url, db)
            except Exception as exc:  # leave the bench's database behind, say so
                print(f"could not drop {db}: {exc}", file=sys.stderr)


def compare_with_one_process(runs: list[RunStats], port_two: int, args: argparse.Namespace,
                             workdir: Path, databases: list[str]) -> dict[str, Any]:
    """Replay the recorded batches into ONE daemon process on a fresh database; the
    diagnoses of every run must equal those the two processes produced."""
    url = create_pg_database(args.pg_url)
    databases.append(url)
    single = DaemonProc(url, workdir / "pg-single.log").start()
    try:
        t = time.monotonic()
        problems = asyncio.run(replay(single.port, runs))
        replay_s = time.monotonic() - t
        ids = [rs.run_id for rs in runs]
        two = asyncio.run(fetch_diagnoses(port_two, ids))
        one = asyncio.run(fetch_diagnoses(single.port, ids))
    finally:
        single.stop()
    differ = [rid for rid in ids if two[rid] != one[rid]]
    n_diag = sum(len(v) for v in two.values() if isinstance(v, list))
    for rid in differ[:3]:
        problems.append(f"diagnoses differ for {rid}:\n  2 procs: {two[rid]}\n"
                        f"  1 proc:  {one[rid]}")
    return {"same_diagnoses": not differ and not problems, "diagnoses": n_diag,
            "replay_s": replay_s, "problems": problems}


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    cols = ["backend", "procs", "runs", "secs", "points/s", "req/s", "p50 ms", "p99 ms",
            "p99 >1s", "max ms", "lag p50 ms", "lag max ms", "detected", "cpu cores",
            "driver cores", "lost", "errors", "same diag."]
    rows = []
    for r in results:
        same = r["same_diagnoses"]
        rows.append([
            r["backend"], (f"{r['procs']} {args.balance}" if r["procs"] > 1 else "1"),
            str(args.runs), f"{r['elapsed']:.1f}",
            f"{r['points'] / r['elapsed']:,.0f}", f"{r['requests'] / r['elapsed']:,.0f}",
            f"{r['p50'] * 1e3:.1f}", f"{r['p99'] * 1e3:.1f}", f"{r['p99_later'] * 1e3:.1f}",
            f"{r['max'] * 1e3:.1f}",
            f"{r['lag_p50'] * 1e3:.1f}", f"{r['lag_max'] * 1e3:.1f}",
            f"{r['detected']}/{r['diverging']}", f"{r['cpu']:.2f}", f"{r['driver_cpu']:.2f}",
            str(r["lost"]),
            str(r["errors"]),
            "n/a" if same is None else (f"yes ({r['diagnoses']})" if same else "NO"),
        ])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="concurrent runs (200)")
    ap.add_argument("--rate", type=float, default=50.0, help="train_loss points/s per run (50)")
    ap.add_argument("--flush-ms", type=float, default=250.0, help="flush interval, ms (250)")
    ap.add_argument("--val-every", type=int, default=0,
                    help="a val_loss point every N steps for every run (default: each run's "
                         f"own cadence, one of {', '.join(map(str, VAL_CADENCES))})")
    ap.add_argument("--duration", type=float, default=30.0,
                    help=f"streaming seconds, at most {MAX_DURATION_S:.0f} (30)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=DEFAULT_PG,
                    help="PostgreSQL URL of a user that may CREATE DATABASE")
    ap.add_argument("--short", action="store_true", help="CI smoke: 20 runs, 5 s")
    ap.add_argument("--val-phase", choices=("random", "aligned"), default="random",
                    help="random (default): each run validates at its own step phase, as "
                         "independent jobs do; aligned: every run validates on the same steps "
                         "(all 200 evaluations land in one flush interval)")
    ap.add_argument("--balance", choices=("affine", "round-robin"), default="affine",
                    help="postgresql: affine (default): each run's batches to one daemon, "
                         "drawn per run; round-robin: alternate between the daemons")
    ap.add_argument("--dump-latencies", metavar="FILE", default=None,
                    help="write [send time, latency] of every request as JSON (last backend)")
    ap.add_argument("--max-p99-ms", type=float, default=None,
                    help="also fail when the p99 ingest latency is above this")
    args = ap.parse_args(argv)
    if args.short:
        args.runs, args.duration = min(args.runs, 20), min(args.duration, 5.0)
    if not 0 < args.duration <= MAX_DURATION_S:
        ap.error(f"--duration must be in (0, {MAX_DURATION_S:.0f}]")
    if args.runs < 1 or args.rate <= 0 or args.flush_ms <= 0 or args.val_every < 0:
        ap.error("--runs, --rate and --flush-ms must be positive, --val-every not negative")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            ap.error(f"unknown backend {b!r}")

    cadence = f"every {args.val_every}" if args.val_every else \
        f"each run's own cadence ({'/'.join(map(str, VAL_CADENCES))})"
    print(f"rhythmd load: {args.runs} runs x {args.rate:g} steps/s (train_loss + lr per step, "
          f"val_loss {cadence} steps, {args.val_phase} phases), flush every "
          f"{args.flush_ms:g} ms, "
          f"{args.duration:g} s per backend; {os.cpu_count()} CPUs")
    results = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="rhythmd-load-") as tmp:
        for backend in backends:
            res = bench_backend(backend, args, Path(tmp))
            results.append(res)
            bad = [e for rs in res["runs"] for e in rs.errors][:5] + res.get("problems", [])
            if res["lost"] or res["errors"] or res["same_diagnoses"] is False:
                failed = True
            if args.max_p99_ms is not None and res["p99"] * 1e3 > args.max_p99_ms:
                failed = True
                bad.append(f"p99 {res['p99'] * 1e3:.1f} ms > {args.max_p99_ms:g} ms")
            for line in bad:
                print(f"[{backend}] {line}")
            if backend != "sqlite":
                print(f"[{backend}] replayed the same batches into 1 process in "
                      f"{res['replay_s']:.1f} s")
    print()
    print_table(results, args)
    print("\npoints/s: stored points / streaming time; p50/p99/max: ingest request latency "
          "(p99 >1s: of the requests sent after the first second); "
          "lag: send of the batch holding\nthe detection step -> divergence visible on "
          "GET /diagnoses; cpu: daemon process(es), cores; driver: this process, cores;\n"
          "lost: points sent - stored; "
          "same diag.: diagnoses of the 2-process run == a 1-process replay of the same batches")
    print("RESULT:", "FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
