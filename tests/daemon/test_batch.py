"""The ingest body parser: every accepted non-finite form, and errors that name the field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rhythmd.batch import parse_metric_batch
from rhythmd.errors import InvalidInputError, TooLargeError


def one(values, steps=None, **extra):
    steps = list(range(len(values))) if steps is None else steps
    return {"series": [{"name": "train_loss", "steps": steps, "values": values, **extra}]}


def test_all_nonfinite_spellings_are_data():
    body = json.loads('{"series": [{"name": "loss", "steps": [0,1,2,3,4,5,6], "values": '
                      '[NaN, Infinity, -Infinity, "NaN", "Infinity", "-Infinity", null]}]}')
    batch = parse_metric_batch(body)
    v = batch.series[0].values
    assert math.isnan(v[0]) and v[1] == math.inf and v[2] == -math.inf
    assert math.isnan(v[3]) and v[4] == math.inf and v[5] == -math.inf and math.isnan(v[6])
    assert batch.series[0].n_nonfinite == 7


def test_ints_and_floats_become_float64():
    batch = parse_metric_batch(one([1, 2.5, 10**300, -0.0, 5e-324]))
    assert batch.series[0].values.dtype == np.float64
    assert batch.series[0].values[2] == 1e300
    assert batch.n_points == 5


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (one([1.0, 2.0], steps=[0]), ["body", "series", 0, "values"]),
        (one([1.0], steps=[-1]), ["body", "series", 0, "steps", 0]),
        (one([1.0, 2.0], steps=[0, 1.5]), ["body", "series", 0, "steps", 1]),
        (one([1.0, True]), ["body", "series", 0, "values", 1]),
        (one([1.0, "1.5"]), ["body", "series", 0, "values", 1]),
        (one([1.0], steps=[True]), ["body", "series", 0, "steps", 0]),
        (one([1.0], steps=[2**70]), ["body", "series", 0, "steps", 0]),
        (one([10**400]), ["body", "series", 0, "values", 0]),
        (one([1.0], wall_times=[1.0, 2.0]), ["body", "series", 0, "wall_times"]),
        (one([1.0], wall_times=[float("nan")]), ["body", "series", 0, "wall_times"]),
        ({"series": [{"name": "bad\nname", "steps": [0], "values": [1.0]}]},
         ["body", "series", 0, "name"]),
        ({"series": [{"name": "x" * 257, "steps": [0], "values": [1.0]}]},
         ["body", "series", 0, "name"]),
        ({"series": [{"name": "a", "steps": [0], "values": [1]},
                     {"name": "a", "steps": [1], "values": [1]}]}, ["body", "series", 1, "name"]),
        ({"series": "nope"}, ["body", "series"]),
        ({"series": [], "batch_id": "has space"}, ["body", "batch_id"]),
        ({"series": [], "branch": -1}, ["body", "branch"]),
        ({"series": [], "colour": 1}, ["body", "colour"]),
        ([], ["body"]),
    ],
)
def test_malformed_input_names_the_field(body, loc):
    with pytest.raises(InvalidInputError) as err:
        parse_metric_batch(body)
    assert err.value.detail()[0]["loc"] == loc


def test_limits_are_413():
    with pytest.raises(TooLargeError):
        parse_metric_batch(one([1.0] * 11), max_points=10)
    many = {"series": [{"name": f"m{i}", "steps": [0], "values": [1]} for i in range(3)]}
    with pytest.raises(TooLargeError):
        parse_metric_batch(many, max_series=2)


def test_metric_names_as_people_write_them():
    for name in ("train/loss", "val/acc@1", "eval/loss (ema)", "lr-pg[0]", "a:b,c=d#1"):
        assert parse_metric_batch({"series": [{"name": name, "steps": [0], "values": [1]}]})
