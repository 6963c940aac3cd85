"""Make ``rhythmd_client`` importable before ``clients/python`` is pip-installed."""

import sys
from pathlib import Path

_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
if str(_CLIENT) not in sys.path:
    sys.path.insert(0, str(_CLIENT))
