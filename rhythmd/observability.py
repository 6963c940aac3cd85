"""Prometheus metrics and structured logs.

Counters and histograms live in this process (in prometheus-client's multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set, as ``rhythmd serve --workers N`` does, so one scrape sees
every worker). Gauges that describe the runs (open diagnoses, recommendations, active runs)
are read from the database at scrape time, so they are the same whichever process answers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

POINTS = Counter("rhythmd_points_ingested", "Points stored (duplicates excluded).")
BATCHES = Counter("rhythmd_batches", "Metric batches received.", ["result"])
REJECTED = Counter("rhythmd_rejected_requests", "Requests answered with an error.", ["reason"])
INGEST_SECONDS = Histogram("rhythmd_ingest_seconds", "Ingest transaction time (store + analysis).",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
ANALYSIS_SECONDS = Histogram("rhythmd_analysis_seconds", "Analysis time per ingested batch.",
                             buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025, 0.05, 0.1, 0.5))
ANALYSIS_ERRORS = Counter("rhythmd_analysis_errors", "Batches whose analysis raised.")
WEBHOOKS = Counter("rhythmd_webhooks", "Webhook deliveries.", ["result"])

CONTENT_TYPE = CONTENT_TYPE_LATEST


class StoreCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from rhythmd.store.schema import diagnoses, recommendations, runs

        store = self.service.store
        rule = self.service.lost_rule
        open_diags = GaugeMetricFamily("rhythmd_open_diagnoses", "Open diagnoses by kind.",
                                       labels=["kind"])
        recs = GaugeMetricFamily("rhythmd_recommendations",
                                 "Recommendations by action and status.",
                                 labels=["action", "status"])
        active = GaugeMetricFamily("rhythmd_active_runs",
                                   "Running runs that are not lost.")
        try:
            with store.read() as conn:
                for kind, n in conn.execute(
                        select(diagnoses.c.kind, func.count()).where(diagnoses.c.status == "open")
                        .group_by(diagnoses.c.kind)):
                    open_diags.add_metric([kind], n)
                for action, status, n in conn.execute(
                        select(recommendations.c.action, recommendations.c.status, func.count())
                        .group_by(recommendations.c.action, recommendations.c.status)):
                    recs.add_metric([action, status], n)
                rows = conn.execute(select(runs.c.status, runs.c.n_batches, runs.c.updated_at,
                                           runs.c.interval_s)
                                    .where(runs.c.status == "running")).mappings().all()
        except Exception:  # a scrape during a database outage reports what it can
            logging.getLogger("rhythmd").warning("metrics: database unavailable")
            return
        now = time.time()
        active.add_metric([], sum(1 for r in rows if not rule.is_lost(r, now)))
        yield open_diags
        yield recs
        yield active


def render_metrics(service: Any) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    extra = CollectorRegistry()
    extra.register(StoreCollector(service))
    return body + generate_latest(extra)


class LogFormatter(logging.Formatter):
    """One line per event: ``time level logger message key=value…`` or JSON (``json=True``).

    Extra fields passed with ``extra={"run_id": …}`` are appended."""

    _STD: ClassVar[set[str]] = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))

    def __init__(self, json_lines: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items()
                 if k not in self._STD and not k.startswith("_") and k != "message"}
        if self.json_lines:
            out = {"time": self.formatTime(record), "level": record.levelname,
                   "logger": record.name, "message": record.getMessage(), **extra}
            if record.exc_info:
                out["exc"] = self.formatException(record.exc_info)
            return json.dumps(out, default=str)
        line = super().format(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def configure_logging(level: str, json_lines: bool) -> None:
    """Give the ``rhythmd`` loggers one handler (idempotent)."""
    logger = logging.getLogger("rhythmd")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_rhythmd", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler._rhythmd = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    for h in logger.handlers:
        if getattr(h, "_rhythmd", False):
            h.setFormatter(LogFormatter(json_lines))
