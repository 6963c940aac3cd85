"""Package metadata people rely on: the license, one version, every import declared, and the
pinned installs of CI and the Dockerfile."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

import pytest

import rhythmd
from tests._pyproject import load, norm, req_name

ROOT = Path(__file__).resolve().parents[2]


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"requirements.lock: {line!r} is not an exact pin"
            pins[norm(name)] = pinned.strip()
    return pins


def test_license_is_spdx_with_its_text() -> None:
    project = load(ROOT)["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert not any(c.startswith("License ::") for c in project["classifiers"])


def test_one_version_source() -> None:
    pyproject = load(ROOT)
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "rhythmd.__version__"}
    try:
        assert version("rhythmd") == rhythmd.__version__
    except PackageNotFoundError:
        pytest.skip("rhythmd is not installed")


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in rhythmd/, with the files importing them."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "rhythmd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "rhythmd":
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_imported_package_is_declared() -> None:
    project = load(ROOT)["project"]
    declared = {req_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared.update(req_name(r) for r in extra)
    owners = packages_distributions()
    undeclared = {}
    for module, files in _third_party_imports().items():
        if module in owners:
            known = {norm(d) for d in owners[module]} & declared
        else:  # not installed here: a distribution named after the module (mlflow-skinny)
            known = {d for d in declared if d == norm(module) or d.startswith(norm(module) + "-")}
        if not known:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_sqlite_needs_no_postgres_driver() -> None:
    project = load(ROOT)["project"]
    assert "psycopg" not in {req_name(r) for r in project["dependencies"]}
    assert {req_name(r) for r in project["optional-dependencies"]["postgres"]} == {"psycopg"}


def test_torch_is_pinned_for_ci_only() -> None:
    project = load(ROOT)["project"]
    every = [*project["dependencies"], *load(ROOT)["dependency-groups"]["test"]]
    every += [r for extra in project["optional-dependencies"].values() for r in extra]
    assert not any(req_name(r) == "torch" and "==" in r for r in every)
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()
    assert _lock()["torch"] == "2.13.0"


def test_lock_pins_the_test_setup_within_the_constraints() -> None:
    pins = _lock()
    group = {req_name(r) for r in load(ROOT)["dependency-groups"]["test"]}
    base = {req_name(r) for r in load(ROOT)["project"]["dependencies"]}
    assert not (group | base) - set(pins), "requirements.lock misses packages: regenerate it"
    minor = tuple(int(x) for x in pins["sqlalchemy"].split(".")[:2])
    bounds = re.search(r"^sqlalchemy>=([\d.]+),<([\d.]+)$", (ROOT / "constraints.txt").read_text(),
                       re.M)
    assert bounds, "constraints.txt caps sqlalchemy"
    assert tuple(int(x) for x in bounds.group(2).split(".")) > minor


def test_dockerfile_installs_from_the_lock() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*-c requirements\.lock [^\n]*\.\[postgres\]", docker)
    copied = " ".join(re.findall(r"^COPY (.*) \S+$", docker, re.M)).split()
    for needed in ("pyproject.toml", "README.md", "LICENSE", "requirements.lock", "rhythmd"):
        assert needed in copied, f"the Dockerfile does not copy {needed}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"LICENSE", "requirements.lock"} & set(ignored)
