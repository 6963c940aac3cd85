"""Per-series last and best values for run summaries, read from chunk statistics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import Connection, func, select

from rhythmd.store.chunks import F8 as _F8
from rhythmd.store.chunks import I8 as _I8
from rhythmd.store.schema import chunks, series

MAXIMISED = ("acc", "f1", "auc", "bleu", "rouge", "precision", "recall", "map", "dice", "iou",
             "score", "reward")


def maximised(name: str) -> bool:
    """Whether higher is better for a metric, judged from its name (``val/acc@1``: yes)."""
    low = name.lower()
    return any(tag in low for tag in MAXIMISED)


def series_summary(conn: Connection, run_id: str) -> dict[str, dict[str, Any]]:
    """``{name: {last, last_step, best, best_step, points, nonfinite_points}}``.

    ``last`` is the last point to arrive; ``best`` the finite minimum (maximum for accuracy-like
    names; none for ``lr``)."""
    out: dict[str, dict[str, Any]] = {}
    rows = conn.execute(select(series).where(series.c.run_id == run_id)).mappings().all()
    for s in rows:
        sid = s["series_id"]
        last = conn.execute(select(chunks.c.steps, chunks.c["values"])
                            .where(chunks.c.series_id == sid)
                            .order_by(chunks.c.seq_start.desc()).limit(1)).first()
        item: dict[str, Any] = {"points": s["n_points"], "nonfinite_points": s["n_nonfinite"],
                                "last": None, "last_step": None, "best": None, "best_step": None}
        if last is not None:
            item["last"] = float(np.frombuffer(last[1], dtype=_F8)[-1])
            item["last_step"] = int(np.frombuffer(last[0], dtype=_I8)[-1])
        if s["name"] != "lr":
            high = maximised(s["name"])
            agg = func.max(chunks.c.vmax) if high else func.min(chunks.c.vmin)
            best = conn.execute(select(agg).where(chunks.c.series_id == sid)).scalar()
            if best is not None and math.isfinite(best):
                col = chunks.c.vmax if high else chunks.c.vmin
                hit = conn.execute(select(chunks.c.steps, chunks.c["values"])
                                   .where(chunks.c.series_id == sid, col == best)
                                   .order_by(chunks.c.seq_start).limit(1)).first()
                item["best"] = float(best)
                if hit is not None:
                    values = np.frombuffer(hit[1], dtype=_F8)
                    idx = int(np.nanargmax(values) if high else np.nanargmin(values))
                    item["best_step"] = int(np.frombuffer(hit[0], dtype=_I8)[idx])
        out[s["name"]] = item
    return out
