"""The run status vocabulary: lifecycle, health, and the one status shown to people."""

from __future__ import annotations

LIFECYCLE = ("running", "finished", "failed", "stopped")
"""Stored lifecycle statuses; a run is created ``running``."""

ENDINGS = LIFECYCLE[1:]
"""The statuses a client may end a run with."""

HEALTHY = "healthy"
HEALTHS = (HEALTHY, "diverging", "stagnating", "oscillating", "slow")
"""A run's health, from its open diagnoses."""
HEALTH_OF = (("divergence", "diverging"), ("oscillation", "oscillating"),
             ("stagnation", "stagnating"), ("slow_progress", "slow"))
"""Open diagnosis kind -> run health, most urgent first; ``healthy`` with none open."""

LOST = "lost"
"""Shown for a running run that went silent (``rhythmd.store.runs.LostRule``)."""

SHOWN = (*HEALTHS, "stopped", "finished", LOST)
"""The one status shown to people (``rhythmd.store.runs.display_status``): a live run's
health, ``lost``, or how it ended (``failed`` shows as ``finished``)."""

FILTERS = (*LIFECYCLE, LOST, *HEALTHS)
"""What the runs list filters on: a lifecycle status, ``lost``, or a live run's health."""


def health_of(open_kinds: set[str]) -> str:
    """The run's health given the kinds of its open diagnoses."""
    return next((health for kind, health in HEALTH_OF if kind in open_kinds), HEALTHY)
