"""Timeline items: how each stored event reads on a run's timeline."""

from __future__ import annotations

from typing import Any


def format_g(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def timeline_item(base: str, e: dict[str, Any]) -> dict[str, Any]:
    kind, p, ref = e["kind"], e["payload"], e["ref_id"]
    links: dict[str, str] = {}
    if kind.startswith("diagnosis_"):
        links["diagnosis"] = f"{base}/diagnoses/{ref}"
        verb = kind.split("_", 1)[1]
        title = (f"{p.get('kind')} {verb}"
                 + (f" ({p.get('severity')})" if verb != "closed" else "")
                 + (f": {p.get('message')}" if p.get("message") else ""))
    elif kind == "recommendation_issued":
        links["recommendation"] = f"{base}/recommendations/{ref}"
        if p.get("diagnosis_id"):
            links["diagnosis"] = f"{base}/diagnoses/{p['diagnosis_id']}"
        args = ", ".join(f"{k}={v}" for k, v in (p.get("params") or {}).items())
        title = f"{p.get('author')} recommends {p.get('action')}({args}): {p.get('reason')}"
    elif kind in ("recommendation_applied", "recommendation_rejected",
                  "recommendation_expired"):
        links["recommendation"] = f"{base}/recommendations/{ref}"
        verb = kind.split("_", 1)[1]
        title = f"{p.get('action', 'recommendation')} {verb}"
        if verb == "applied" and p.get("lr_before") is not None:
            title += f": lr {p.get('lr_before')} -> {p.get('lr_after')}"
        if p.get("note"):
            title += f" ({p['note']})"
    elif kind == "run_finished":
        title = f"run ended: {p.get('status')}"
    elif kind == "run_resumed":
        title = f"data again after {p.get('silent_s')} s of silence"
    else:
        title = kind
    return {"kind": kind, "step": e["step"], "wall_time": e["wall_time"], "ref_id": ref,
            "title": title, "detail": p, "links": links}
