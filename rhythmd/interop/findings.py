"""rhythmd's findings on one run, as the sinks write them: from an offline analysis (``rhythmd
analyze``) or from a daemon (``rhythmd export``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rhythmd import __version__

SEVERITY_ORDER = ("info", "warning", "high", "critical")
TAG_LIMIT = 5000  # characters MLflow accepts in a tag value everywhere


@dataclass
class Findings:
    """Diagnoses and recommendations of one run.

    A recommendation has ``step`` (issued), ``action``, ``params``, ``reason``, ``status``
    (``"recommended"`` offline, else the daemon's: pending, applied, rejected, expired) and,
    where a client applied it, ``applied_step`` and ``lr_after``.
    """

    source: str
    diagnoses: list[dict[str, Any]]
    recommendations: list[dict[str, Any]]
    run_id: str | None = None  # the daemon's run
    url: str | None = None  # the daemon
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Findings:
        """From ``rhythmd analyze``'s report of one run (nobody acted on its advice)."""
        recs = [{**r, "status": "recommended"} for r in report.get("recommendations", [])]
        return cls(str(report.get("file")), list(report.get("diagnoses", [])), recs,
                   extra={"total_steps": report.get("total_steps"),
                          "metrics": report.get("metrics")})

    @classmethod
    def from_daemon(cls, run: dict[str, Any], diagnoses: list[dict[str, Any]],
                    recs: list[dict[str, Any]], url: str) -> Findings:
        """From a daemon's run, its diagnoses and its recommendations (as the API gives them)."""
        out = []
        for r in recs:
            item = {"step": r.get("issued_at_step"), "action": r.get("action"),
                    "params": r.get("params") or {}, "reason": r.get("reason", ""),
                    "status": r.get("status"), "author": r.get("author")}
            if r.get("applied_step") is not None:
                item["applied_step"] = r["applied_step"]
                item["lr_after"] = r.get("lr_after")
            out.append(item)
        source = (run.get("config") or {}).get("source") or run.get("name") or run["run_id"]
        return cls(str(source), diagnoses, out, run_id=run["run_id"], url=url)

    def status(self) -> str:
        """The worst diagnosis still open; "recovered" when all closed; else "healthy"."""
        open_ = [d for d in self.diagnoses if d.get("closed_at_step") is None]
        if open_:
            worst = max(open_, key=lambda d: _rank(d.get("severity")))
            return f"{worst.get('kind')} ({worst.get('severity')})"
        return "recovered" if self.diagnoses else "healthy"

    def tags(self) -> dict[str, str]:
        """Short ``rhythmd.*`` tags: status, diagnoses and recommendations in one line each."""
        diag = ", ".join(f"{d.get('kind')}@{d.get('detected_at_step')} ({d.get('severity')}"
                         + (")" if d.get("closed_at_step") is None
                            else f", closed@{d['closed_at_step']})") for d in self.diagnoses)
        recs = ", ".join(f"{r.get('action')}({_params(r.get('params'))})@{r.get('step')} "
                         f"{r.get('status')}" for r in self.recommendations)
        tags = {"rhythmd.status": self.status(), "rhythmd.diagnoses": diag or "none",
                "rhythmd.recommendations": recs or "none", "rhythmd.source": self.source,
                "rhythmd.version": __version__}
        if self.run_id:
            tags["rhythmd.run_id"] = self.run_id
        if self.url:
            tags["rhythmd.url"] = self.url
        return {k: v if len(v) <= TAG_LIMIT else v[:TAG_LIMIT - 1] + "…"
                for k, v in tags.items()}

    def to_json(self) -> dict[str, Any]:
        """Everything, for a JSON artifact."""
        return {"rhythmd_version": __version__, "source": self.source, "run_id": self.run_id,
                "url": self.url, "status": self.status(), **self.extra,
                "diagnoses": self.diagnoses, "recommendations": self.recommendations}


def _rank(severity: Any) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else -1


def _params(params: Any) -> str:
    if not isinstance(params, dict):
        return ""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())
