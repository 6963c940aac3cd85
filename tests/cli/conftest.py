"""CLI test helpers: run ``rhythmd`` in-process, a shared SQLite daemon, corpus files."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rhythmd.cli import main
from tests.conftest import Daemon

DATA = Path(__file__).resolve().parent.parent / "data" / "e2e"
DIABETES = DATA / "diabetes_mlp__sgd__lr0.3__warmup_cosine__bs32__s0.csv"  # diverges (NaN/inf)
DIGITS = DATA / "digits_mlp__adam__lr0.001__cosine__bs64__s0.csv"  # stagnates


def hide_package(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """Make ``import prefix…`` fail, as where that package is not installed."""
    real_import = builtins.__import__

    def fake_import(name: str, *a: Any, **kw: Any) -> Any:
        if name.startswith(prefix):
            raise ImportError(f"no {prefix}")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """``cli("runs", "--url", u)`` -> Result(code, stdout, stderr); wide tables."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("RHYTHMD_TOKEN", raising=False)
    monkeypatch.delenv("RHYTHMD_URL", raising=False)

    def run(*argv: str | Path) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors and --help
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture(scope="module")
def sqlite_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One real uvicorn daemon on a SQLite file, shared by a test module (quick)."""
    tmp = tmp_path_factory.mktemp("cli-daemon")
    d = Daemon(f"sqlite:///{tmp / 'rhythmd.db'}", log_path=tmp / "daemon.log").start()
    yield d
    d.stop()
