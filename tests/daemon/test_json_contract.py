"""The JSON contract of responses and request bodies, pinned against the hand-written encoder
the daemon used before ``pydantic_core`` (kept in ``bench/json_codec.py`` as the baseline).

Responses: compact UTF-8, non-finite floats as the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"`` (never bare literals, never ``null``), NumPy scalars and arrays as plain JSON.
Bodies: ``NaN``/``Infinity``/``-Infinity`` literals are read as floats.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pytest

from bench.json_codec import old_float_array_json as reference_float_array
from bench.json_codec import old_render as reference_render
from rhythmd.api.encoding import RhythmdJSONResponse, dumps, float_array_json, raw_json_response
from rhythmd.api.jsonbody import parse_json, parse_json_body
from rhythmd.errors import InvalidInputError


def strict_loads(raw: bytes | str) -> Any:
    """``json.loads`` that refuses the bare NaN/Infinity literals no browser accepts."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"bare {token} in a response")
    return json.loads(raw, parse_constant=refuse)


def same(a: Any, b: Any) -> bool:
    """Equal, with float signs compared too (-0.0 is not 0.0) and types kept apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


TRICKY: dict[str, Any] = {
    "nonfinite": [math.nan, math.inf, -math.inf, 0.5],
    "nested": {"a": {"b": {"c": [1, {"d": math.nan}, (math.inf, -0.0)]}}, "e": []},
    "negative_zero": -0.0,
    "extremes": [1e308, -1e308, 5e-324, 2.2250738585072014e-308, 0.1, 1 / 3, 1e16, 1e22],
    "huge_ints": [2**63, -(2**64), 10**30, 0, -1],
    "non_ascii": ["héllo ☃", "日本語", "emoji 🎉", "\u2028\u2029", "tab\tnewline\n\"quote\"\\"],
    "control": "\x00\x01\x1f\x7f",
    "numpy_scalars": [np.float64(1.5), np.float64("nan"), np.float32(-np.inf), np.int64(-7),
                      np.int32(3), np.uint64(2**63), np.bool_(True)],
    "numpy_arrays": [np.array([1.0, np.nan, np.inf, -np.inf]), np.arange(4, dtype=np.int64),
                     np.zeros((2, 2), dtype=np.float32), np.array([], dtype=np.float64)],
    "strings_that_look_nonfinite": ["NaN", "Infinity", "-Infinity", "nan", "inf"],
    "literals": [True, False, None],
    "int_keys": {1: "one", 2: "two"},
}


@pytest.mark.parametrize("key", sorted(TRICKY))
def test_render_matches_the_reference(key: str) -> None:
    content = {key: TRICKY[key]}
    new = RhythmdJSONResponse(content).body
    ref = reference_render(content)
    assert same(strict_loads(new), strict_loads(ref))


@pytest.mark.parametrize("key", ["nonfinite", "nested", "negative_zero", "huge_ints", "non_ascii",
                                 "control", "numpy_arrays", "strings_that_look_nonfinite",
                                 "literals", "int_keys"])
def test_render_is_byte_identical_where_number_forms_agree(key: str) -> None:
    # only the spelling of some exponents differs between the encoders (1e-07 vs 1e-7)
    content = {key: TRICKY[key]}
    assert RhythmdJSONResponse(content).body == reference_render(content)


def test_nonfinite_floats_are_strings_never_null_or_bare() -> None:
    body = dumps({"v": [math.nan, math.inf, -math.inf, np.float32("nan")]})
    assert body == b'{"v":["NaN","Infinity","-Infinity","NaN"]}'


def test_non_ascii_is_utf8_not_escaped() -> None:
    body = dumps({"name": "é☃"})
    assert body == '{"name":"é☃"}'.encode()


def test_datetimes_are_iso_8601() -> None:
    # the reference raised TypeError (a 500); no route returns datetimes, but they now encode
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc)
    assert strict_loads(dumps({"at": when})) == {"at": "2026-01-02T03:04:05.600000Z"}
    with pytest.raises(TypeError):
        reference_render({"at": when})


@pytest.mark.parametrize("bad", [object(), "\ud800", np.array([object()], dtype=object)])
def test_what_has_no_json_form_is_an_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        dumps({"x": bad})


@pytest.mark.parametrize("values", [
    np.array([]), np.array([0.5, -0.0, 1e308, 5e-324]),
    np.array([np.nan, np.inf, -np.inf, 1.0]), np.linspace(-1e6, 1e6, 2001),
])
def test_float_array_matches_the_reference(values: np.ndarray) -> None:
    new = float_array_json(values)
    assert same(strict_loads(new), strict_loads(reference_float_array(values)))


def test_raw_json_response_splices_arrays() -> None:
    values = float_array_json(np.array([1.0, np.inf]))
    resp = raw_json_response({"run_id": "r", "name": "loss/ü", "x": math.nan},
                             {"steps": "[0,1]", "values": values})
    assert resp.media_type == "application/json"
    assert strict_loads(resp.body) == {"run_id": "r", "name": "loss/ü", "x": "NaN",
                                       "steps": [0, 1], "values": [1.0, "Infinity"]}
    with pytest.raises(ValueError):
        raw_json_response({}, {"steps": "[]"})


# -- request bodies ----------------------------------------------------------------------------
def test_bodies_read_nonfinite_literals_as_floats() -> None:
    got = parse_json(b'{"v": [NaN, Infinity, -Infinity, "NaN", null, -0.0, 1e308, 1e400]}')
    v = got["v"]
    assert math.isnan(v[0]) and v[1] == math.inf and v[2] == -math.inf
    assert v[3] == "NaN" and v[4] is None
    assert math.copysign(1.0, v[5]) == -1.0 and v[6] == 1e308 and v[7] == math.inf


def test_bodies_agree_with_json_loads_on_valid_json() -> None:
    raw = json.dumps(TRICKY | {"numpy_scalars": None, "numpy_arrays": None, "int_keys": None},
                     ensure_ascii=False).encode()
    assert same(parse_json(raw), json.loads(raw))


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": 1,}', b'"\\ud800"', b"\xff\xfe", b"[" * 5000])
def test_bad_bodies_are_a_422_at_body(raw: bytes) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_json_body(raw)
    assert err.value.loc == ("body",)


def test_nonfinite_config_values_come_back_as_strings(client: Any) -> None:
    """A run's ``config`` may hold NaN/±Inf (a hyperparameter sweep's placeholder): create,
    read and list answer them as the strings, never as null."""
    body = b'{"name": "nan-config", "config": {"a": NaN, "b": [Infinity, -Infinity], "c": 1.5}}'
    r = client.post("/v1/runs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    want = {"a": "NaN", "b": ["Infinity", "-Infinity"], "c": 1.5}
    assert r.json()["config"] == want
    rid = r.json()["run_id"]
    assert client.get(f"/v1/runs/{rid}").json()["config"] == want
    listed = [x for x in client.get("/v1/runs").json()["runs"] if x["run_id"] == rid]
    assert listed[0]["config"] == want
