"""What happened to a run: its summary, its timeline, and single diagnoses/recommendations."""

from __future__ import annotations

from fastapi import APIRouter

from rhythmd.api.deps import NOT_FOUND, UNAVAILABLE, ServiceDep
from rhythmd.api.encoding import RhythmdJSONResponse
from rhythmd.api.jsonbody import JSONRoute
from rhythmd.api.schemas import Diagnosis, Recommendation, RunSummary, Timeline
from rhythmd.api.security import requires

router = APIRouter(route_class=JSONRoute,
                   prefix="/v1/runs/{run_id}", tags=["debugging"],
                   responses={**UNAVAILABLE, **NOT_FOUND})


@router.get("/recommendations/{rec_id}", response_model=Recommendation,
            dependencies=[requires("watch")])
def get_recommendation(run_id: str, rec_id: str, service: ServiceDep) -> RhythmdJSONResponse:
    return RhythmdJSONResponse(service.get_recommendation(run_id, rec_id))


@router.get("/summary", response_model=RunSummary, dependencies=[requires("read")])
def get_summary(run_id: str, service: ServiceDep) -> RhythmdJSONResponse:
    """Status at a glance (healthy, diverging, stagnating, oscillating, slow, stopped, finished,
    lost), current LR, best and last value of each metric, and counts."""
    return RhythmdJSONResponse(service.summary(run_id))


@router.get("/timeline", response_model=Timeline, dependencies=[requires("read")])
def get_timeline(run_id: str, service: ServiceDep) -> RhythmdJSONResponse:
    """One ordered list of everything that happened to the run, each item with its step, wall
    time, a one-line title and links to its evidence."""
    return RhythmdJSONResponse({"run_id": run_id, "items": service.timeline(run_id)})


@router.get("/diagnoses/{diagnosis_id}", response_model=Diagnosis,
            dependencies=[requires("read")])
def get_diagnosis(run_id: str, diagnosis_id: str, service: ServiceDep) -> RhythmdJSONResponse:
    return RhythmdJSONResponse(service.get_diagnosis(run_id, diagnosis_id))

