"""Runs: create, list, read, finish."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from rhythmd.api.deps import INVALID, NOT_FOUND, UNAVAILABLE, ServiceDep, SettingsDep
from rhythmd.api.jsonbody import JSONRoute
from rhythmd.api.schemas import EventList, Run, RunCreate, RunFinish, RunList
from rhythmd.api.security import enforce, enforce_named, principal_in, requires
from rhythmd.auth import ALL
from rhythmd.errors import ConflictError
from rhythmd.run_status import FILTERS

router = APIRouter(route_class=JSONRoute,
                   prefix="/v1/runs", tags=["runs"], responses={**UNAVAILABLE})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Run,
             responses={200: {"model": Run, "description": "The run_id existed: returned as is."},
                        409: {"description": "run_id exists with another name (or project)."},
                        **NOT_FOUND, **INVALID})
def create_run(body: RunCreate, service: ServiceDep, response: Response, request: Request,
               _: object = requires("ingest")) -> dict:
    """Create a run. Send its metrics to ``POST /v1/runs/{run_id}/metrics``. A ``run_id`` of
    another project's run reads as 404, like every other request about it."""
    principal = principal_in(request)
    if principal is not None and principal.project != ALL and body.project is None:
        body = body.model_copy(update={"project": principal.project})
    enforce_named(principal, body.project, "ingest")
    try:
        run, created = service.create_run(body.name, body.project, body.config, body.tags,
                                          body.run_id)
    except ConflictError:
        if principal is not None and body.run_id is not None:
            enforce(principal, service.run_project(body.run_id), "watch",
                    what=f"run {body.run_id!r}")
        raise
    if not created:
        response.status_code = status.HTTP_200_OK
    return run


@router.get("", response_model=RunList, responses={**INVALID})
def list_runs(
    service: ServiceDep,
    settings: SettingsDep,
    request: Request,
    _: Annotated[object, requires("watch")],
    project: Annotated[str | None, Query(max_length=128, description="Only this project.")] = None,
    status_: Annotated[str | None, Query(
        alias="status",
        pattern=f"^({'|'.join(FILTERS)})$",
        description="Only runs in this lifecycle status (running, finished, failed, stopped), "
                    "lost (silent too long), or live runs of this health.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size (capped by "
                                "RHYTHMD_MAX_PAGE_SIZE).")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31, description="Runs to skip.")] = 0,
) -> dict:
    """Runs, newest first, optionally of one project; page with ``limit`` and ``offset``."""
    principal = principal_in(request)
    if principal is not None and principal.project != ALL:
        if project is not None:
            enforce_named(principal, project, "watch")
        project = principal.project
    limit = min(limit, settings.max_page_size)
    runs, total = service.list_runs(project, status_, limit, offset)
    nxt = offset + len(runs) if offset + len(runs) < total else None
    return {"runs": runs, "total": total, "limit": limit, "offset": offset, "next_offset": nxt}


@router.get("/{run_id}", response_model=Run, responses={**NOT_FOUND},
            dependencies=[requires("watch")])
def get_run(run_id: str, service: ServiceDep) -> dict:
    return service.get_run(run_id)


@router.post("/{run_id}/finish", response_model=Run, responses={**NOT_FOUND, **INVALID},
             dependencies=[requires("ingest")])
def finish_run(run_id: str, service: ServiceDep, body: RunFinish | None = None) -> dict:
    """Mark a run as ended (the client's ``close()`` calls this)."""
    body = body or RunFinish()
    return service.finish_run(run_id, body.status, body.step)


@router.get("/{run_id}/events", response_model=EventList, responses={**NOT_FOUND},
            dependencies=[requires("read")])
def list_events(run_id: str, service: ServiceDep) -> dict:
    """The run's event log, oldest first: recommendations issued and acknowledged, ends."""
    return {"run_id": run_id, "events": service.list_events(run_id)}
