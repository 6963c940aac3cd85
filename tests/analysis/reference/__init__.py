"""Frozen copy of the per-point rhythmd.analysis implementation (before vectorisation).

Used only as the reference for the equivalence tests; do not edit except to mirror
intentional behaviour changes of the production code.
"""

from .analyzer import RunAnalyzer
from .types import AnalysisConfig

__all__ = ["AnalysisConfig", "RunAnalyzer"]
