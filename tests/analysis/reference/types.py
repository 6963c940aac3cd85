"""The value types did not change with the bulk path: the reference uses the package's own."""

from rhythmd.analysis.types import (
    KINDS,
    AnalysisConfig,
    Diagnosis,
    DiagnosisEvent,
    ScheduleSegment,
)

__all__ = ["KINDS", "AnalysisConfig", "Diagnosis", "DiagnosisEvent", "ScheduleSegment"]
