"""``DirectRoute``: a route whose endpoint FastAPI calls without solving dependencies.

FastAPI solves a route's dependencies and parameters on every request: for the ingest
endpoint, which hundreds of training jobs call several times a second, that was a sizeable
share of the daemon's CPU. A :class:`DirectRoute` keeps the declaration (path, responses and
the OpenAPI schema are FastAPI's as usual) but calls ``endpoint(request=..., **path_params)``
itself: path parameters arrive as strings, and the endpoint does its own checks
(:func:`rhythmd.api.security.authorize`) and reads its own body. Exceptions reach the app's
handlers as from any route.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class DirectRoute(APIRoute):
    """An ``async def endpoint(<path params>: str, request: Request) -> Response`` called
    directly. Route dependencies would never run, so declaring any is an error."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if kwargs.get("dependencies"):
            raise TypeError(f"{path}: a DirectRoute runs no dependencies; call the checks in "
                            "the endpoint")
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request=request, **request.path_params)
            return response

        return handle
