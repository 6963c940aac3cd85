"""Recommendations: list, issue by hand, acknowledge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from rhythmd.api.deps import INVALID, NOT_FOUND, UNAVAILABLE, ServiceDep
from rhythmd.api.jsonbody import JSONRoute
from rhythmd.api.schemas import (
    Recommendation,
    RecommendationAck,
    RecommendationCreate,
    RecommendationList,
)
from rhythmd.api.security import requires

router = APIRouter(route_class=JSONRoute,
                   prefix="/v1/runs/{run_id}/recommendations", tags=["recommendations"],
                   responses={**UNAVAILABLE})


@router.get("", response_model=RecommendationList, responses={**NOT_FOUND, **INVALID},
            dependencies=[requires("watch")])
def list_recommendations(
    run_id: str, service: ServiceDep,
    status_: Annotated[str | None, Query(alias="status",
                                         pattern="^(pending|applied|rejected|expired)$")] = None,
) -> dict:
    return {"run_id": run_id, "recommendations": service.list_recommendations(run_id, status_)}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Recommendation,
             responses={**NOT_FOUND, **INVALID}, dependencies=[requires("steer")])
def create_recommendation(run_id: str, body: RecommendationCreate, service: ServiceDep) -> dict:
    """Issue a recommendation by hand (e.g. ``{"action": "reduce_lr", "params": {"factor":
    0.5}}`` or ``{"action": "stop"}``); the client applies it like the daemon's own."""
    return service.create_recommendation(run_id, body.action, body.params, reason=body.reason,
                                         author=body.author,
                                         expires_at_step=body.expires_at_step)


@router.post("/{rec_id}/ack", response_model=Recommendation,
             responses={**NOT_FOUND, **INVALID,
                        409: {"description": "Already acknowledged with another outcome."}},
             dependencies=[requires("ingest")])
def ack_recommendation(run_id: str, rec_id: str, body: RecommendationAck,
                       service: ServiceDep) -> dict:
    """Record what the client did: applied (with the LRs before and after) or rejected."""
    return service.ack_recommendation(run_id, rec_id, body.status, body.step, body.lr_before,
                                      body.lr_after, body.note)
