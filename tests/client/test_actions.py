"""The client's action vocabulary is the daemon's: same actions, same parameter names."""

from __future__ import annotations

from rhythmd.recommendations import ACTIONS as DAEMON_ACTIONS
from rhythmd_client import ACTIONS as EXPORTED
from rhythmd_client.actions import ACTION_NAMES, ACTIONS, LR_CHANGES
from rhythmd_client.hook import RhythmHook


def test_client_actions_match_the_daemon_exactly() -> None:
    assert {a: frozenset(p) for a, p in DAEMON_ACTIONS.items()} == ACTIONS
    assert EXPORTED is ACTIONS and set(DAEMON_ACTIONS) == ACTION_NAMES


def test_lr_changes_are_actions_and_the_hook_allows_all_by_default() -> None:
    assert LR_CHANGES < ACTION_NAMES
    hook = RhythmHook(mode="disabled")
    assert hook.allow == ACTION_NAMES
    hook.close()
