"""Reading pyproject.toml files and requirement names, for the packaging tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

tomllib = pytest.importorskip("tomllib")


def norm(name: str) -> str:
    """A distribution name in its normalized form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert m, requirement
    return norm(m.group(1))


def load(project_dir: Path) -> dict[str, Any]:
    """The parsed ``pyproject.toml`` of ``project_dir``."""
    with open(project_dir / "pyproject.toml", "rb") as f:
        return tomllib.load(f)
