"""The ingest floor: a bare FastAPI endpoint that parses the same body and does one
``executemany`` of unindexed rows into a SQLite file. No validation, no dedupe, no analysis.

Started by ``bench/ingest.py`` as ``uvicorn bench._floor_app:app`` with FLOOR_DB set.
"""

from __future__ import annotations

import json
import os
import sqlite3

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()
_db = sqlite3.connect(os.environ["FLOOR_DB"], check_same_thread=False, isolation_level=None)
_db.execute("PRAGMA journal_mode=WAL")
_db.execute("PRAGMA synchronous=NORMAL")
_db.execute("CREATE TABLE IF NOT EXISTS points (run_id TEXT, name TEXT, step INTEGER, value REAL)")


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post("/v1/runs")
async def create_run() -> JSONResponse:
    return JSONResponse({"run_id": "floor"}, status_code=201)


@app.post("/v1/runs/{run_id}/metrics")
async def ingest(run_id: str, request: Request) -> dict:
    body = json.loads(await request.body())
    rows = [(run_id, s["name"], st, v) for s in body["series"]
            for st, v in zip(s["steps"], s["values"], strict=False)]
    _db.execute("BEGIN")
    _db.executemany("INSERT INTO points VALUES (?, ?, ?, ?)", rows)
    _db.execute("COMMIT")
    return {"accepted": len(rows), "duplicate": False}


@app.get("/count")
async def count() -> dict:
    return {"points": _db.execute("SELECT count(*) FROM points").fetchone()[0]}
