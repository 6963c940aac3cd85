"""Recommendations: list, issue by hand, acknowledge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from rhythmd.api.deps import INVALID, NOT_FOUND, UNAVAILABLE, ServiceDep
from rhythmd.api.jsonbody import JSONRoute
from rhythmd.api.schemas import (
    Recommendation,
    RecommendationAck,
    RecommendationCreate,
    RecommendationList,
)
from rhythmd.api.security import principal_in, requires

CLIENT_AUTHOR_PREFIX = "rhythmd-client/"
"""Authors of recommendations a client reports about its own changes (the local reflex)."""

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
             responses={**NOT_FOUND, **INVALID}, dependencies=[requires("watch")])
def create_recommendation(run_id: str, body: RecommendationCreate, service: ServiceDep,
                          request: Request) -> dict:
    """Issue a recommendation by hand (e.g. ``{"action": "reduce_lr", "params": {"factor":
    0.5}}`` or ``{"action": "stop"}``); the client applies it like the daemon's own. Needs
    the ``steer`` scope. A token of scope ``ingest`` (a training job) may only report what its
    client already did on its own (author ``rhythmd-client/…``, e.g. the local reflex): such a
    report is stored as applied at once, so no client ever applies it."""
    principal = principal_in(request)
    report = False
    if principal is not None:
        project = service.run_project(run_id)
        if not principal.may("steer", project):
            if not (body.author.startswith(CLIENT_AUTHOR_PREFIX)
                    and principal.may("ingest", project)):
                raise HTTPException(
                    403, f"issuing recommendations needs the 'steer' scope; this token "
                    f"({principal.scope}) may only report its client's own changes "
                    f"(author '{CLIENT_AUTHOR_PREFIX}…')")
            report = True
    return service.create_recommendation(run_id, body.action, body.params, reason=body.reason,
                                         author=body.author,
                                         expires_at_step=body.expires_at_step, report=report)


@router.post("/{rec_id}/ack", response_model=Recommendation,
             responses={**NOT_FOUND, **INVALID,
                        409: {"description": "Already acknowledged with another outcome."}},
             dependencies=[requires("ingest")])
def ack_recommendation(run_id: str, rec_id: str, body: RecommendationAck,
                       service: ServiceDep) -> dict:
    """Record what the client did: applied (with the LRs before and after) or rejected."""
    return service.ack_recommendation(run_id, rec_id, body.status, body.step, body.lr_before,
                                      body.lr_after, body.note)
