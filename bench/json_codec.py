"""Response encoding: the hand-written encoder rhythmd used before (kept below as the baseline)
against ``rhythmd.api.encoding`` (``pydantic_core.to_json``), in the same run.

    python bench/json_codec.py               # 500-run listing, 2,000-float series
    python bench/json_codec.py --repeat 200

Cases: the body of ``GET /v1/runs?limit=500`` (500 run records with configs and tags), a
2,000-point series as a dict (``RhythmdJSONResponse``), and a 2,000-float array alone
(``float_array_json``, the ``GET .../metrics/{name}`` path). One float in 50 is NaN or ±Inf.
Both encoders' outputs are checked to parse to the same values before timing. Prints the best
of ``--repeat`` timings (microseconds) per case and the ratio old/new.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rhythmd.api.encoding import RhythmdJSONResponse, float_array_json


# -- BASELINE: the encoder of rhythmd 0.1.0 (rhythmd/jsonsafe.py + rhythmd/api/encoding.py) ----
def old_encode_nonfinite(obj: Any) -> Any:
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if math.isnan(obj):
            return "NaN"
        return "Infinity" if obj > 0 else "-Infinity"
    if isinstance(obj, dict):
        return {k: old_encode_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [old_encode_nonfinite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return old_encode_nonfinite(obj.tolist())
    if isinstance(obj, np.generic):
        return old_encode_nonfinite(obj.item())
    return obj


def old_render(content: Any) -> bytes:
    return json.dumps(old_encode_nonfinite(content), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


_OLD_TOKEN = re.compile(r"-?Infinity|NaN")


def old_float_array_json(values: np.ndarray) -> str:
    text = json.dumps(values.tolist())
    if values.size and not np.isfinite(values).all():
        text = _OLD_TOKEN.sub(lambda m: f'"{m.group(0)}"', text)
    return text
# -----------------------------------------------------------------------------------------------


def new_render(content: Any) -> bytes:
    return RhythmdJSONResponse(content).body


def _float(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.02:
        return rng.choice([math.nan, math.inf, -math.inf])
    return rng.lognormvariate(0, 2)


def run_listing(n: int, rng: random.Random) -> dict[str, Any]:
    """A ``GET /v1/runs`` body of ``n`` runs, shaped as the service returns them."""
    runs = []
    for i in range(n):
        runs.append({
            "run_id": f"{i:032x}", "name": f"resnet-{i}", "project": "vision",
            "config": {"optimizer": "adamw", "lr": _float(rng), "betas": [0.9, 0.999],
                       "weight_decay": 0.01, "total_steps": 100_000,
                       "schedule": {"kind": "cosine", "warmup": 500, "min_lr": _float(rng)}},
            "tags": {"owner": "ünïcode", "gpu": "h100"}, "status": "running",
            "created_at": 1.7e9 + i, "updated_at": 1.7e9 + i + _float(rng),
            "last_step": i * 10, "n_points": i * 30, "n_batches": i, "branch": 0,
            "health": "healthy", "state": "healthy",
        })
    return {"runs": runs, "total": n, "limit": n, "offset": 0, "next_offset": None}


def best_us(fn: Callable[[], Any], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def _same(a: bytes | str, b: bytes | str) -> bool:
    return json.dumps(json.loads(a), sort_keys=True) == json.dumps(json.loads(b), sort_keys=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=100, help="timings per case; best kept (100)")
    p.add_argument("--runs", type=int, default=500, help="runs in the listing (500)")
    p.add_argument("--floats", type=int, default=2_000, help="floats in the series (2,000)")
    args = p.parse_args()
    rng = random.Random(0)
    listing = run_listing(args.runs, rng)
    values = np.array([_float(rng) for _ in range(args.floats)])
    series = {"run_id": "r", "name": "train_loss", "steps": list(range(args.floats)),
              "values": values.tolist()}
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        (f"{args.runs}-run listing", lambda: old_render(listing), lambda: new_render(listing)),
        (f"{args.floats}-float series (dict)", lambda: old_render(series),
         lambda: new_render(series)),
        (f"{args.floats}-float array", lambda: old_float_array_json(values),
         lambda: float_array_json(values)),
    ]
    print(f"{'case':32} {'old us':>10} {'new us':>10} {'old/new':>8}")
    for name, old, new in cases:
        if not _same(old(), new()):
            raise SystemExit(f"{name}: the encoders disagree")
        t_old, t_new = best_us(old, args.repeat), best_us(new, args.repeat)
        print(f"{name:32} {t_old:10.1f} {t_new:10.1f} {t_old / t_new:8.1f}")


if __name__ == "__main__":
    main()
