"""URL, token and mode: an argument wins over RHYTHMD_* variables, which win over defaults."""

from __future__ import annotations

import pytest

from rhythmd_client._settings import DEFAULT_URL, resolve


def test_defaults_without_arguments_or_environment() -> None:
    assert resolve(None, None, None, environ={}) == (DEFAULT_URL, None, "apply")


def test_environment_fills_what_the_arguments_leave_out() -> None:
    env = {"RHYTHMD_URL": "http://d:1", "RHYTHMD_TOKEN": "t", "RHYTHMD_MODE": "Advise"}
    assert resolve(None, None, None, environ=env) == ("http://d:1", "t", "advise")


def test_arguments_win_over_the_environment() -> None:
    env = {"RHYTHMD_URL": "http://d:1", "RHYTHMD_TOKEN": "t", "RHYTHMD_MODE": "disabled"}
    assert resolve("http://a:2", "own", "apply", environ=env) == ("http://a:2", "own", "apply")


def test_empty_variables_count_as_unset() -> None:
    env = {"RHYTHMD_URL": " ", "RHYTHMD_TOKEN": "", "RHYTHMD_MODE": ""}
    assert resolve(None, None, None, environ=env) == (DEFAULT_URL, None, "apply")


def test_a_bad_mode_names_its_source() -> None:
    with pytest.raises(ValueError, match="RHYTHMD_MODE"):
        resolve(None, None, None, environ={"RHYTHMD_MODE": "off"})
    with pytest.raises(ValueError, match=r"^mode"):
        resolve(None, None, "advice", environ={})
