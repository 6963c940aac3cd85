"""API tokens (admin scope): create, list, revoke.

A project's admin token manages its own project's tokens only: it can neither create a token
for another project (or ``*``) nor see or revoke another project's tokens.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field

from rhythmd.api.deps import INVALID, NOT_FOUND, UNAVAILABLE, ServiceDep
from rhythmd.api.jsonbody import JSONRoute
from rhythmd.api.security import enforce_named, principal_in, requires
from rhythmd.auth import Decision
from rhythmd.errors import NotFoundError

router = APIRouter(route_class=JSONRoute,
                   prefix="/v1/tokens", tags=["tokens"], responses={**UNAVAILABLE},
                   dependencies=[requires("admin")])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(..., min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f/]+$",
                         description='A project name, or "*" for every project.')
    scope: str = Field(..., pattern="^(ingest|read|steer|admin)$")
    description: str | None = Field(None, max_length=256)


class TokenCreated(BaseModel):
    token_id: str
    token: str = Field(description="Shown once: store it now.")
    project: str
    scope: str
    description: str | None


class TokenInfo(BaseModel):
    token_id: str
    project: str
    scope: str
    description: str | None
    created_at: float
    revoked: bool


class TokenList(BaseModel):
    tokens: list[TokenInfo]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TokenCreated,
             responses={**INVALID, 403: {"description": "A project outside this token's."}})
def create_token(body: TokenCreate, service: ServiceDep, request: Request) -> dict:
    enforce_named(principal_in(request), body.project, "admin")
    return service.create_token(body.project, body.scope, body.description)


@router.get("", response_model=TokenList)
def list_tokens(service: ServiceDep, request: Request) -> dict:
    """The tokens of the projects this token covers."""
    principal = principal_in(request)
    return {"tokens": [t for t in service.list_tokens()
                       if principal is None
                       or principal.decide(t["project"], "admin") is Decision.ALLOW]}


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND})
def revoke_token(token_id: str, service: ServiceDep, request: Request) -> None:
    principal = principal_in(request)
    if principal is not None:
        project = service.token_project(token_id)
        if project is None or principal.decide(project, "admin") is not Decision.ALLOW:
            raise NotFoundError(f"no active token {token_id!r}")
    service.revoke_token(token_id)
