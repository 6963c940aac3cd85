"""API tokens (admin scope): create, list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from rhythmd.api.deps import INVALID, NOT_FOUND, UNAVAILABLE, ServiceDep
from rhythmd.api.security import requires

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses={**UNAVAILABLE},
                   dependencies=[requires("admin")])


class TokenCreate(BaseModel):
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
             responses={**INVALID})
def create_token(body: TokenCreate, service: ServiceDep) -> dict:
    return service.create_token(body.project, body.scope, body.description)


@router.get("", response_model=TokenList)
def list_tokens(service: ServiceDep) -> dict:
    return {"tokens": service.list_tokens()}


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND})
def revoke_token(token_id: str, service: ServiceDep) -> None:
    service.revoke_token(token_id)
