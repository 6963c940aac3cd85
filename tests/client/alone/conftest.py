"""Client tests that need neither torch nor the daemon package (run by .ci/client-alone.sh).

``tests/client`` goes on ``sys.path`` for the stdlib fake daemon; the client itself is the
installed one in the client-alone venv, and the source tree's one in the project venv.
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent, _HERE.parents[2] / "clients" / "python"):
    if str(_path) not in sys.path:
        sys.path.append(str(_path))  # appended: an installed rhythmd_client comes first

from fake_daemon import FakeDaemon  # noqa: E402


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    """A running stdlib fake daemon."""
    d = FakeDaemon().start()
    yield d
    d.stop()
