"""The recommendation policy: pure mapping from diagnoses and run history to LR fixes.

- :mod:`.policy`: which recommendation answers which diagnosis, and when to escalate;
- :mod:`.trials`: judging an applied change against the projection of what came before;
- :mod:`.context`: the one builder of a :class:`RunContext` from an analyzer and a history;
- :mod:`.types`: the policy's parameters, its view of the run and its decisions.
"""

from rhythmd.policy.context import history_entry, run_context
from rhythmd.policy.policy import (
    Decision,
    PolicyConfig,
    RecommendationSpec,
    RunContext,
    answerable,
    decide,
    fallback,
)
from rhythmd.policy.trials import TRIAL_ACTIONS, TrialVerdict, judge

__all__ = ["TRIAL_ACTIONS", "Decision", "PolicyConfig", "RecommendationSpec", "RunContext",
           "TrialVerdict", "answerable", "decide", "fallback", "history_entry", "judge",
           "run_context"]
