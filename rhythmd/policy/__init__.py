"""The recommendation policy: pure mapping from diagnoses and run history to LR fixes."""

from rhythmd.policy.policy import (
    Decision,
    PolicyConfig,
    RecommendationSpec,
    RunContext,
    answerable,
    decide,
)

__all__ = ["Decision", "PolicyConfig", "RecommendationSpec", "RunContext", "answerable",
           "decide"]
