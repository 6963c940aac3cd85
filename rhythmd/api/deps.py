"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rhythmd.config import Settings
from rhythmd.service import Service


# Dependencies are ``async def`` so FastAPI runs them on the event loop: a plain ``def``
# dependency costs a worker-thread hop on every request.
async def get_service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

NOT_FOUND = {404: {"description": "Unknown run (or metric, recommendation)."}}
INVALID = {422: {"description": "Malformed input; `detail[].loc` names the field."}}
UNAVAILABLE = {503: {"description": "Database unreachable; retry after `Retry-After` seconds."}}
