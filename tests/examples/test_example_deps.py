"""The install command in examples/README.md covers every package the examples import."""

from __future__ import annotations

import ast
import re
import shlex
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests._pyproject import load, norm, req_name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def documented_install() -> list[str]:
    """The arguments of the ``pip install`` in the README's shell block."""
    block = re.search(r"```sh\n(.*?)```", (EXAMPLES / "README.md").read_text(), re.S)
    assert block, "examples/README.md has no ```sh block"
    m = re.search(r"pip install ([^\n&|;]+)", block.group(1))
    assert m, "examples/README.md's shell block has no pip install"
    return shlex.split(m.group(1))


def installed_by(args: list[str]) -> set[str]:
    """Distributions a ``pip install`` of local projects with extras brings in (one level)."""
    names: set[str] = set()
    for arg in args:
        if arg.startswith("-"):
            continue
        m = re.fullmatch(r"([^\[\]]+)(?:\[([^\]]*)\])?", arg)
        assert m, arg
        path = (ROOT / m.group(1)).resolve()
        assert (path / "pyproject.toml").is_file(), f"{arg}: not a local project"
        project = load(path)["project"]
        names.add(norm(project["name"]))
        names.update(req_name(r) for r in project.get("dependencies", []))
        extras = project.get("optional-dependencies", {})
        for extra in filter(None, (m.group(2) or "").split(",")):
            assert extra in extras, f"{arg}: no extra {extra!r} in {path.name}/pyproject.toml"
            names.update(req_name(r) for r in extras[extra])
    return names


def imported_distributions(path: Path) -> dict[str, str]:
    """Top-level third-party modules ``path`` imports, mapped to their distributions."""
    owners = packages_distributions()
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    found: dict[str, str] = {}
    for module in sorted(modules - set(sys.stdlib_module_names)):
        dists = owners.get(module)
        assert dists, f"{path.name} imports {module}, which no installed distribution provides"
        found[module] = norm(dists[0])
    return found


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_documented_install_covers_the_imports(script: Path) -> None:
    provided = installed_by(documented_install())
    missing = {m: d for m, d in imported_distributions(script).items() if d not in provided}
    assert not missing, f"{script.name} imports {missing}, not installed by examples/README.md"


def test_the_examples_extra_is_needed() -> None:
    # the check has teeth: the daemon's own dependencies do not bring in the example's
    # third-party imports (scikit-learn, torch)
    needed = set(imported_distributions(EXAMPLES / "train_digits.py").values())
    assert {"scikit-learn", "torch"} <= needed
    assert not needed <= installed_by(["."])
