"""Diagnoses and the identified LR schedule of a run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from rhythmd.api.deps import INVALID, NOT_FOUND, UNAVAILABLE, ServiceDep
from rhythmd.api.encoding import RhythmdJSONResponse
from rhythmd.api.jsonbody import JSONRoute
from rhythmd.api.schemas import DiagnosisList, ScheduleOut
from rhythmd.api.security import requires

router = APIRouter(route_class=JSONRoute,
                   prefix="/v1/runs/{run_id}", tags=["analysis"], responses={**UNAVAILABLE},
                   dependencies=[requires("read")])


@router.get("/diagnoses", response_model=DiagnosisList, responses={**NOT_FOUND, **INVALID})
def list_diagnoses(
    run_id: str, service: ServiceDep,
    kind: Annotated[str | None, Query(
        pattern="^(divergence|stagnation|oscillation|slow_progress|spike)$")] = None,
    status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
) -> RhythmdJSONResponse:
    """Diagnoses of the run, oldest first: what was detected, where it started, the evidence
    (statistics, windows, p-values) and a one-line message. Updated while the condition
    persists, closed when it ends."""
    # Returned as is: evidence may hold non-finite floats, written as strings.
    return RhythmdJSONResponse({"run_id": run_id,
                                "diagnoses": service.list_diagnoses(run_id, kind, status)})


@router.get("/schedule", response_model=ScheduleOut, responses={**NOT_FOUND})
def get_schedule(run_id: str, service: ServiceDep) -> RhythmdJSONResponse:
    """The LR schedule identified from the run's `lr` stream, as segments (constant, warmup,
    step, exponential, cosine, one-cycle, …) with their parameters."""
    return RhythmdJSONResponse({"run_id": run_id, "segments": service.schedule(run_id)})
