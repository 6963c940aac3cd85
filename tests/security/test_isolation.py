"""Project isolation: no escalation, no cross-project leak, one authorisation table."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhythmd.auth import Decision, authorize
from tests.security.conftest import ADMIN, Secured, bearer

SCOPES = ("ingest", "read", "steer", "admin")
VERBS = ("watch", "read", "ingest", "steer", "admin")
# The scopes of docs/daemon.md (Security), written out: what each may do inside its own project.
TABLE = {
    "ingest": {"watch", "ingest"},
    "read": {"watch", "read"},
    "steer": {"watch", "read", "steer"},
    "admin": {"watch", "read", "ingest", "steer", "admin"},
}
projects = st.sampled_from(["a", "b", "*", "ab", "A"]) | st.text(min_size=1, max_size=8)


def expected(token_project: str, scope: str, target: str | None, verb: str) -> Decision:
    if token_project != "*" and token_project != target:
        return Decision.HIDE
    return Decision.ALLOW if verb in TABLE[scope] else Decision.FORBID


@given(projects, st.sampled_from(SCOPES), st.none() | projects, st.sampled_from(VERBS))
def test_authorize_matches_the_table(token_project: str, scope: str, target: str | None,
                                     verb: str) -> None:
    assert authorize(token_project, scope, target, verb) is expected(token_project, scope,
                                                                      target, verb)


def test_unknown_scope_or_verb_grants_nothing() -> None:
    assert authorize("*", "root", "*", "read") is Decision.FORBID
    assert authorize("*", "admin", "*", "delete") is Decision.FORBID


# the same table, through the real daemon ----------------------------------------------------
class World:
    """Tokens for every (project, scope) and runs in projects a, b and none."""

    def __init__(self, s: Secured) -> None:
        self.s = s
        self.tokens = {(p, sc): s.token(p, sc) for p, sc in itertools.product("ab*", SCOPES)}
        self.runs = {p: s.run(p) for p in ("a", "b", None)}
        self.counter = itertools.count()

    def request(self, token: str, run_project: str | None, verb: str) -> Any:
        rid = self.runs[run_project]
        h = bearer(token)
        http = self.s.http
        if verb == "watch":
            return http.get(f"/v1/runs/{rid}", headers=h)
        if verb == "read":
            return http.get(f"/v1/runs/{rid}/timeline", headers=h)
        if verb == "ingest":
            body = {"series": [{"name": "loss", "steps": [next(self.counter)], "values": [1.0]}]}
            return http.post(f"/v1/runs/{rid}/metrics", json=body, headers=h)
        if verb == "steer":
            return http.post(f"/v1/runs/{rid}/recommendations", headers=h,
                             json={"action": "reduce_lr", "params": {"factor": 0.9}})
        return http.post("/v1/tokens", headers=h,
                         json={"project": run_project or "*", "scope": "read"})


@pytest.fixture(scope="module")
def world(secured: Secured) -> World:
    return World(secured)


@settings(max_examples=60, deadline=None)
@given(token_project=st.sampled_from("ab*"), scope=st.sampled_from(SCOPES),
       run_project=st.sampled_from(["a", "b", None]), verb=st.sampled_from(VERBS))
def test_every_request_follows_the_table(world: World, token_project: str, scope: str,
                                         run_project: str | None, verb: str) -> None:
    r = world.request(world.tokens[(token_project, scope)], run_project, verb)
    target = (run_project or "*") if verb == "admin" else run_project
    want = expected(token_project, scope, target, verb)
    if want is Decision.ALLOW:
        assert r.status_code in (200, 201), (r.status_code, r.text)
    elif want is Decision.FORBID or verb == "admin":  # a project named in a body: 403
        assert r.status_code == 403, (r.status_code, r.text)
    else:
        assert r.status_code == 404, (r.status_code, r.text)
        rid = world.runs[run_project]
        assert r.json() == {"detail": f"run {rid!r} not found"}


# escalation (finding 1) ------------------------------------------------------------------------
def test_project_admin_stays_in_its_project(secured: Secured) -> None:
    http = secured.http
    admin_a = bearer(secured.token("a", "admin"))
    other = secured.token("b", "read")
    for project in ("*", "b"):
        for scope in SCOPES:
            r = http.post("/v1/tokens", json={"project": project, "scope": scope},
                          headers=admin_a)
            assert r.status_code == 403, r.text
    made = http.post("/v1/tokens", json={"project": "a", "scope": "admin"}, headers=admin_a)
    assert made.status_code == 201 and made.json()["project"] == "a"

    listed = http.get("/v1/tokens", headers=admin_a).json()["tokens"]
    assert listed and {t["project"] for t in listed} == {"a"}
    every = http.get("/v1/tokens", headers=bearer(ADMIN)).json()["tokens"]
    other_id = next(t["token_id"] for t in every if t["project"] == "b" and not t["revoked"])
    assert http.delete(f"/v1/tokens/{other_id}", headers=admin_a).status_code == 404
    assert http.get("/v1/runs", headers=bearer(other)).status_code == 200
    assert http.get("/metrics", headers=admin_a).status_code == 403
    # its own project's tokens it does manage
    mine = made.json()["token_id"]
    assert http.delete(f"/v1/tokens/{mine}", headers=admin_a).status_code == 204
    assert http.get("/v1/runs", headers=bearer(made.json()["token"])).status_code == 401


# existence leak (finding 2) --------------------------------------------------------------------
def test_another_projects_run_id_reads_as_404(secured: Secured) -> None:
    http = secured.http
    hidden = secured.run("team-b", run_id="b-secret-run", name="b-secret-name")
    ingest_a = bearer(secured.token("team-a", "ingest"))
    unknown = http.post("/v1/runs", json={"name": "x", "run_id": "no-such-run-anywhere"},
                        headers=ingest_a)
    assert unknown.status_code == 201  # an unused id is simply created
    r = http.post("/v1/runs", json={"name": "x", "run_id": hidden}, headers=ingest_a)
    assert r.status_code == 404, r.text
    assert "team-b" not in r.text and "b-secret-name" not in r.text
    assert r.json() == {"detail": f"run {hidden!r} not found"}
    r = http.post("/v1/runs", json={"name": "b-secret-name", "run_id": hidden},
                  headers=ingest_a)
    assert r.status_code == 404
    for path in ("", "/metrics", "/recommendations", "/summary"):
        assert http.get(f"/v1/runs/{hidden}{path}", headers=ingest_a).status_code == 404
    listing = http.get("/v1/runs", headers=ingest_a).json()
    assert hidden not in {run["run_id"] for run in listing["runs"]}
    # the same project still learns of the clash (409), as without authentication
    ingest_b = bearer(secured.token("team-b", "ingest"))
    assert http.post("/v1/runs", json={"name": "other", "run_id": hidden},
                     headers=ingest_b).status_code == 409


# a training job's own reports (the client's local reflex) -------------------------------------
def test_an_ingest_token_may_only_report_its_clients_own_changes(secured: Secured) -> None:
    http = secured.http
    rid = secured.run("a")
    job = bearer(secured.token("a", "ingest"))
    issue = http.post(f"/v1/runs/{rid}/recommendations", headers=job,
                      json={"action": "reduce_lr", "params": {"factor": 0.5}})
    assert issue.status_code == 403 and "steer" in issue.text
    report = http.post(f"/v1/runs/{rid}/recommendations", headers=job, json={
        "action": "rollback", "params": {"to_step": 3, "lr_factor": 0.1},
        "author": "rhythmd-client/reflex", "reason": "non-finite loss at step 9"})
    assert report.status_code == 201, report.text
    assert report.json()["status"] == "applied"  # a report: nobody applies it again
    pending = http.get(f"/v1/runs/{rid}/recommendations", headers=job,
                       params={"status": "pending"}).json()["recommendations"]
    assert pending == []
    ack = http.post(f"/v1/runs/{rid}/recommendations/{report.json()['id']}/ack", headers=job,
                    json={"status": "applied", "step": 3, "lr_before": [0.5],
                          "lr_after": [0.05]})
    assert ack.status_code == 200 and ack.json()["lr_before"] == [0.5]
    # another project's job cannot report into this run (it does not see it)
    other = bearer(secured.token("b", "ingest"))
    assert http.post(f"/v1/runs/{rid}/recommendations", headers=other, json={
        "action": "stop", "author": "rhythmd-client/reflex"}).status_code == 404
