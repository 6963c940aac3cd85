"""The tests here run without torch and without the daemon package: none imports them at
module level, and importing the client imports neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FORBIDDEN = ("torch", "rhythmd")  # rhythmd_client is fine


def module_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(HERE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_level_torch_or_daemon_import(path: Path) -> None:
    assert not module_imports(path) & set(FORBIDDEN)


def test_importing_the_client_imports_neither_torch_nor_the_daemon() -> None:
    code = ("import sys, rhythmd_client, rhythmd_client.hook, rhythmd_client.transport; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rhythmd')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == "[]"
