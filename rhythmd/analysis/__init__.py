"""Pure, incremental analysis of training-rhythm streams (no I/O).

Entry point: ``RunAnalyzer(AnalysisConfig.from_run_config(cfg)).feed(batch)``.
"""

from .analyzer import RunAnalyzer
from .types import AnalysisConfig, Diagnosis, DiagnosisEvent, ScheduleSegment

__all__ = ["AnalysisConfig", "Diagnosis", "DiagnosisEvent", "RunAnalyzer", "ScheduleSegment"]
