"""``/docs`` without a CDN, and the OpenAPI schema's bearer security scheme.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package and are served by the
daemon under ``/docs/assets/``, so the page works on a cluster with no internet access.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
SCHEME = "bearer"


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def install_docs(app: FastAPI, title: str) -> None:
    """Serve Swagger UI at ``/docs`` from the package's own copy of its files."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/docs/assets/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(assets_dir() / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})


def add_security(schema: dict[str, Any], *, auth_required: bool) -> None:
    """Declare the bearer scheme on every ``/v1`` operation and ``/metrics``: required with
    ``RHYTHMD_AUTH=required`` (with its 401 and 403), else optional."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http", "scheme": "bearer",
        "description": "An API token (`rhythmd token create --project P --scope S`).",
    }
    requirement: list[dict[str, list[str]]] = [{SCHEME: []}]
    if not auth_required:
        requirement = [{}, *requirement]  # optional
    for path, item in schema.get("paths", {}).items():
        if not (path.startswith("/v1/") or path == "/metrics"):
            continue
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operation["security"] = requirement
            responses = operation["responses"]
            if "requestBody" in operation:
                responses.setdefault("415", {"description": "The body is not application/json."})
                responses.setdefault("403", {"description": "A write from another origin."})
            if auth_required:
                responses.setdefault("401", {"description": "Missing, unknown or revoked token."})
                responses.setdefault("403", {"description": "The token's scope does not allow "
                                                            "this."})
