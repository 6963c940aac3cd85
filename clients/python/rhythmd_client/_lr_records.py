"""The LR controller's records: warmup ramps, change points and schedule overrides.

They are plain dicts of numbers so that :meth:`~rhythmd_client.apply.LRController.state_dict`
can save them; the copies made here hold host floats only. A ramp goes from ``start`` to
``peak`` (relative factors per param group) in ``steps`` optimizer steps; ``k`` counts the
steps done.
"""

from __future__ import annotations

from typing import Any


def ramp_value(r: dict[str, Any], i: int, k: int) -> float:
    """The ramp's factor for group ``i`` after ``k`` of its steps (linear, then flat)."""
    a, b = r["start"][i], r["peak"][i]
    return a + (b - a) * min(k, r["steps"]) / r["steps"]


def copy_ramp(r: dict[str, Any]) -> dict[str, Any]:
    """A ramp as plain host numbers."""
    return {
        "steps": int(r["steps"]),
        "k": int(r["k"]),
        "start": [float(x) for x in r["start"]],
        "peak": [float(x) for x in r["peak"]],
        "id": int(r.get("id", 0)),
    }


def copy_change(c: dict[str, Any]) -> dict[str, Any]:
    """A change point with its lists copied as host floats."""
    out = dict(c)
    for key in ("lrs", "fs", "peak"):
        if out.get(key) is not None:
            out[key] = [float(x) for x in out[key]]
    out["override"] = copy_override(c.get("override"))
    return out


def copy_override(ov: dict[str, Any] | None) -> dict[str, Any] | None:
    """A schedule override with its lists copied (None stays None)."""
    if ov is None:
        return None
    out = dict(ov)
    for key in ("base", "eta", "milestones"):
        if key in out:
            out[key] = list(out[key])
    return out


def factors_note(fs: list[float]) -> str:
    """The relative factors per group, in words for an ack note."""
    return "factors " + ", ".join(f"x{f:.6g}" for f in fs)


def new_ramp(ramp_id: int, steps: int, host: list[float], start: float, peak: float,
             lo: list[float], hi: list[float]) -> dict[str, Any]:
    """A ramp over ``steps`` from ``start`` to ``peak`` (relative factors), each group's
    absolute LR kept inside ``[lo, hi]`` at both ends."""
    starts, peaks = [], []
    for cur, low, high in zip(host, lo, hi, strict=True):
        if cur > 0:
            starts.append(min(max(cur * start, low), high) / cur)
            peaks.append(min(max(cur * peak, low), high) / cur)
        else:
            starts.append(1.0)
            peaks.append(1.0)
    return {"steps": steps, "k": 0, "start": starts, "peak": peaks, "id": ramp_id}


def advance_ramps(ramps: list[dict[str, Any]], dt: int,
                  n: int) -> tuple[list[float], list[dict[str, Any]]]:
    """Move every ramp ``dt`` steps on: the relative factor per group to apply now, and the
    ramps still running."""
    total = [1.0] * n
    alive = []
    for r in ramps:
        k0 = r["k"]
        k1 = min(k0 + dt, r["steps"])
        r["k"] = k1
        for i in range(n):
            total[i] *= ramp_value(r, i, k1) / ramp_value(r, i, k0)
        if k1 < r["steps"]:
            alive.append(r)
    return total, alive
