"""The recommendation vocabulary as documented is the one the daemon accepts and the client
knows: every action and parameter in the headings of docs/recommendations.md is accepted by
``POST /v1/runs/{id}/recommendations`` and is in ``rhythmd_client.actions.ACTIONS``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rhythmd.recommendations import ACTIONS as DAEMON_ACTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "recommendations.md"
HEADING = re.compile(r"^### `(?P<action>[a-z_]+)` \{(?P<params>[^}]*)\}", re.MULTILINE)

SAMPLE = {"factor<1": 0.5, "factor<=1": 0.5, "factor>1": 2.0, "float>=0": 1e-5,
          "float>0": 1.0, "int>0": 10, "int>=0": 5, "int>=-1": 3, "kind": "cosine",
          "ints": [10, 20], "id": "a1b2c3"}
"""A valid value for each parameter kind of ``rhythmd.recommendations``."""


def documented() -> dict[str, list[str]]:
    """action -> its parameter names, as the headings of docs/recommendations.md list them."""
    out: dict[str, list[str]] = {}
    for m in HEADING.finditer(DOC.read_text(encoding="utf-8")):
        names = [re.split(r"[?=\s]", p.strip(), maxsplit=1)[0]
                 for p in m["params"].split(",") if p.strip()]
        out[m["action"]] = names
    return out


DOCUMENTED = documented()
PAIRS = [(a, p) for a, ps in DOCUMENTED.items() for p in ps] + [(a, None) for a in DOCUMENTED]


def test_the_headings_document_every_action_of_the_daemon():
    assert sorted(DOCUMENTED) == sorted(DAEMON_ACTIONS)
    assert len(PAIRS) > len(DOCUMENTED)  # the parser found parameters


def _params(action: str, param: str | None) -> dict[str, Any]:
    """The action's required parameters plus ``param``, each with a valid value."""
    spec = DAEMON_ACTIONS[action]
    params = {k: SAMPLE[kind] for k, (kind, required) in spec.items() if required}
    if action == "set_schedule":
        params.update({"kind": "multistep", "milestones": [10, 20]}
                      if param in ("milestones", "gamma") else {"kind": "cosine", "T_max": 100})
    if param is not None and param not in params:
        kind = spec[param][0] if param in spec else "float>0"  # undocumented: refused below
        params[param] = SAMPLE[kind]
    return params


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    from fastapi.testclient import TestClient

    from rhythmd.app import create_app
    from rhythmd.config import Settings

    url = f"sqlite:///{tmp_path_factory.mktemp('contract') / 'rhythmd.db'}"
    with TestClient(create_app(Settings(database_url=url))) as c:
        assert c.post("/v1/runs", json={"name": "contract", "run_id": "contract"}
                      ).status_code in (200, 201)
        yield c


@pytest.mark.parametrize(("action", "param"), PAIRS)
def test_documented_parameters_are_accepted_by_the_api(api, action, param):
    params = _params(action, param)
    r = api.post("/v1/runs/contract/recommendations",
                 json={"action": action, "params": params, "reason": "contract test"})
    assert r.status_code == 201, (action, param, r.json())
    assert r.json()["action"] == action and r.json()["params"] == params


@pytest.mark.parametrize(("action", "param"), PAIRS)
def test_documented_parameters_are_in_the_clients_vocabulary(action, param):
    from rhythmd_client.actions import ACTIONS as CLIENT_ACTIONS

    assert action in CLIENT_ACTIONS
    if param is not None:
        assert param in CLIENT_ACTIONS[action], (action, param)
