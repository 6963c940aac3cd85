"""The daemon's use cases over one store, behind one object (a facade over ``rhythmd.core``).

Every method is synchronous (SQLAlchemy Core); the API layer runs them in worker threads, and
HTTP ingest goes through :class:`rhythmd.core.ingest_queue.IngestQueue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rhythmd.auth import Principal
from rhythmd.batch import MetricBatch
from rhythmd.core.access import Access
from rhythmd.core.analyzers import AnalyzerCache
from rhythmd.core.ingest import Ingestor, IngestResult
from rhythmd.core.recommendations import Recommendations
from rhythmd.core.runs import RUN_ID_RE, Runs
from rhythmd.core.views import BranchSelector, SeriesView, Views
from rhythmd.store import Store
from rhythmd.store.runs import LostRule
from rhythmd.webhooks import AlertConfig

__all__ = ["RUN_ID_RE", "AlertConfig", "BranchSelector", "IngestResult", "SeriesView",
           "Service"]


class Service:
    """The daemon's use cases over one :class:`~rhythmd.store.Store`.

    Analysis runs inside each ingest transaction, under the run's write lock, with analyzers
    cached per process (:class:`~rhythmd.core.analyzers.AnalyzerCache`).
    """

    def __init__(self, store: Store, *, analysis: bool = True, cache_size: int = 4096,
                 lost_rule: LostRule | None = None,
                 alerts: AlertConfig | None = None) -> None:
        self.store = store
        self.analysis = analysis
        self.alerts = alerts
        self.lost_rule = lost_rule or LostRule()
        self.analyzers = AnalyzerCache(cache_size)
        self.ingestor = Ingestor(store, self.analyzers, analysis=analysis,
                                 lost_rule=self.lost_rule, alerts=alerts)
        self.runs = Runs(store, self.lost_rule)
        self.views = Views(store, self.lost_rule, self.analyzers)
        self.recommendations = Recommendations(store, alerts)
        self.access = Access(store)

    # runs -----------------------------------------------------------------------------------
    def create_run(self, name: str, project: str | None = None,
                   config: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                   run_id: str | None = None) -> tuple[dict[str, Any], bool]:
        return self.runs.create(name, project, config, tags, run_id)

    def finish_run(self, run_id: str, status: str, step: int | None) -> dict[str, Any]:
        return self.runs.finish(run_id, status, step)

    # metrics --------------------------------------------------------------------------------
    def ingest(self, run_id: str, batch: MetricBatch) -> IngestResult:
        return self.ingestor.ingest(run_id, batch)

    def ingest_many(self, items: Sequence[tuple[str, MetricBatch]]
                    ) -> list[IngestResult | Exception]:
        return self.ingestor.ingest_many(items)

    # recommendations ------------------------------------------------------------------------
    def create_recommendation(
        self, run_id: str, action: str, params: dict[str, Any], *, reason: str,
        author: str, expires_at_step: int | None = None, diagnosis_id: str | None = None,
        report: bool = False,
    ) -> dict[str, Any]:
        return self.recommendations.create(
            run_id, action, params, reason=reason, author=author,
            expires_at_step=expires_at_step, diagnosis_id=diagnosis_id, report=report)

    def ack_recommendation(
        self, run_id: str, rec_id: str, status: str, step: int | None,
        lr_before: list[float] | None, lr_after: list[float] | None, note: str | None,
    ) -> dict[str, Any]:
        return self.recommendations.acknowledge(run_id, rec_id, status, step, lr_before,
                                                lr_after, note)

    # reads ----------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.views.get_run(run_id)

    def list_runs(self, project: str | None = None, status: str | None = None,
                  limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        return self.views.list_runs(project, status, limit, offset)

    def list_metrics(self, run_id: str) -> list[dict[str, Any]]:
        return self.views.list_metrics(run_id)

    def read_metric(self, run_id: str, name: str, *, branch: BranchSelector = "latest",
                    start_step: int | None = None, end_step: int | None = None,
                    max_points: int | None = None, with_wall_times: bool = False
                    ) -> SeriesView:
        return self.views.read_metric(run_id, name, branch=branch, start_step=start_step,
                                      end_step=end_step, max_points=max_points,
                                      with_wall_times=with_wall_times)

    def list_branches(self, run_id: str) -> list[dict[str, Any]]:
        return self.views.list_branches(run_id)

    def list_diagnoses(self, run_id: str, kind: str | None = None, status: str | None = None
                       ) -> list[dict[str, Any]]:
        return self.views.list_diagnoses(run_id, kind, status)

    def get_diagnosis(self, run_id: str, diagnosis_id: str) -> dict[str, Any]:
        return self.views.get_diagnosis(run_id, diagnosis_id)

    def schedule(self, run_id: str) -> list[dict[str, Any]]:
        return self.views.schedule(run_id)

    def list_recommendations(self, run_id: str, status: str | None = None
                             ) -> list[dict[str, Any]]:
        return self.views.list_recommendations(run_id, status)

    def get_recommendation(self, run_id: str, rec_id: str) -> dict[str, Any]:
        return self.views.get_recommendation(run_id, rec_id)

    def list_events(self, run_id: str) -> list[dict[str, Any]]:
        return self.views.list_events(run_id)

    def summary(self, run_id: str) -> dict[str, Any]:
        return self.views.summary(run_id)

    def timeline(self, run_id: str) -> list[dict[str, Any]]:
        return self.views.timeline(run_id)

    # access ---------------------------------------------------------------------------------
    def verify_token(self, token: str) -> Principal | None:
        return self.access.verify_token(token)

    def token_project(self, token_id: str) -> str | None:
        return self.access.token_project(token_id)

    def run_project(self, run_id: str) -> str | None:
        return self.access.run_project(run_id)

    def create_token(self, project: str, scope: str, description: str | None = None
                     ) -> dict[str, Any]:
        return self.access.create_token(project, scope, description)

    def list_tokens(self) -> list[dict[str, Any]]:
        return self.access.list_tokens()

    def revoke_token(self, token_id: str) -> None:
        self.access.revoke_token(token_id)

    def close(self) -> None:
        """Stop the token revocation watch."""
        self.access.close()
