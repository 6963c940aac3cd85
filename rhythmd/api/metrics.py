"""Metric streams: the columnar ingest endpoint and series queries."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from rhythmd.api.deps import INVALID, NOT_FOUND, UNAVAILABLE, ServiceDep
from rhythmd.api.direct_route import DirectRoute
from rhythmd.api.encoding import RhythmdJSONResponse, float_array_json, raw_json_response
from rhythmd.api.jsonbody import JSONRoute, parse_json_body
from rhythmd.api.schemas import BranchList, IngestResponse, MetricList, SeriesOut
from rhythmd.api.security import authorize, requires
from rhythmd.batch import MAX_STEP, METRIC_NAME_MAX, METRIC_NAME_RE, parse_metric_batch
from rhythmd.config import Settings
from rhythmd.core.ingest_queue import IngestQueue
from rhythmd.errors import InvalidInputError

router = APIRouter(route_class=JSONRoute,
                   prefix="/v1/runs/{run_id}", tags=["metrics"], responses={**UNAVAILABLE})

_REF = "#/components/schemas/{model}"


async def ingest_metrics(run_id: str, request: Request) -> Response:
    """Append a columnar batch of points (many metrics, many points).

    Non-finite values are data: JSON ``NaN``/``Infinity``/``-Infinity`` literals, the same as
    strings, and ``null`` (NaN) are stored exactly. A batch is accepted or rejected whole. A
    retried ``batch_id`` is stored once and answered with ``duplicate: true``. The run's pending
    recommendations come back in the response.
    """
    # the hottest route: a DirectRoute (no dependency solving per request); the queue and
    # settings straight from the app state
    await authorize(request, "ingest")
    queue: IngestQueue = request.app.state.ingest_queue
    settings: Settings = request.app.state.settings
    body: Any = parse_json_body(await request.body())
    batch = parse_metric_batch(body, max_points=settings.max_points_per_batch,
                               max_series=settings.max_series_per_batch)
    result = await queue.ingest(run_id, batch)
    return RhythmdJSONResponse({
        "accepted": result.accepted, "duplicate": result.duplicate, "batch_id": result.batch_id,
        "seq_start": result.seq_start, "branch": result.branch,
        "recommendations": result.recommendations, "blowup_bound": result.blowup_bound,
    })


router.add_api_route(
    "/metrics", ingest_metrics, methods=["POST"], route_class_override=DirectRoute,
    response_model=IngestResponse,
    responses={**NOT_FOUND, **INVALID,
               413: {"description": "Body, points or series above the documented limits."}},
    openapi_extra={"requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="MetricBatchIn")}}},
    }},
)


@router.get("/metrics", response_model=MetricList, responses={**NOT_FOUND},
            dependencies=[requires("read")])
def list_metrics(run_id: str, service: ServiceDep) -> dict:
    """The run's metric names with point counts (every branch included)."""
    return {"run_id": run_id, "metrics": service.list_metrics(run_id)}


def _branch_selector(value: str) -> int | str:
    if value in ("latest", "all"):
        return value
    if value.isdigit() and len(value) <= 9:
        return int(value)
    raise InvalidInputError(("query", "branch"), 'branch must be "latest", "all" or an integer',
                            value)


@router.get("/metrics/{name:path}", response_model=SeriesOut, responses={**NOT_FOUND, **INVALID},
            dependencies=[requires("read")])
def read_metric(
    run_id: str,
    service: ServiceDep,
    name: Annotated[str, Path(description="Metric name; may contain slashes (train/loss).",
                              max_length=METRIC_NAME_MAX, pattern=METRIC_NAME_RE.pattern)],
    start_step: Annotated[int | None, Query(ge=0, le=MAX_STEP, description="First step, "
                                            "inclusive.")] = None,
    end_step: Annotated[int | None, Query(ge=0, le=MAX_STEP, description="Last step, "
                                          "inclusive.")] = None,
    max_points: Annotated[int | None, Query(ge=2, le=10_000_000, description="Downsample to "
                          "about this many points (min/max per bucket; non-finite kept).")] = None,
    branch: Annotated[str, Query(pattern=r"^(latest|all|[0-9]{1,9})$", description=(
        "latest (default): the newest branch's view after rollbacks; N: branch N's view; "
        "all: every point ever stored, in arrival order, with its branch."))] = "latest",
    wall_times: Annotated[bool, Query(description="Include wall times.")] = False,
) -> Response:
    """A series as columns ``steps``/``values``; non-finite values as strings."""
    view = service.read_metric(run_id, name, branch=_branch_selector(branch),  # type: ignore[arg-type]
                               start_step=start_step, end_step=end_step,
                               max_points=max_points, with_wall_times=wall_times)
    arrays = {"steps": json.dumps(view.steps.tolist()), "values": float_array_json(view.values)}
    if view.wall_times is not None:
        arrays["wall_times"] = float_array_json(view.wall_times)
    if view.branches is not None:
        arrays["branches"] = json.dumps(view.branches.tolist())
    head = {"run_id": run_id, "name": view.name, "branch": view.branch,
            "total_points": view.total_points, "returned_points": int(view.steps.size),
            "downsampled": view.downsampled}
    return raw_json_response(head, arrays)


@router.get("/branches", response_model=BranchList, responses={**NOT_FOUND},
            dependencies=[requires("read")])
def list_branches(run_id: str, service: ServiceDep) -> dict:
    """The run's branches: 0, then one per rollback, with the step each resumed from."""
    return {"run_id": run_id, "branches": service.list_branches(run_id)}
