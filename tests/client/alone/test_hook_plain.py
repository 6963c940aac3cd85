"""The hook without torch: logging forms, environment settings, disabled mode, resume state."""

from __future__ import annotations

import socket
import time

import pytest
from fake_daemon import FakeDaemon

from rhythmd_client import RhythmHook


def test_log_takes_a_dict_with_step_like_wandb_and_the_keyword_form(fake: FakeDaemon) -> None:
    with RhythmHook(fake.url, run_name="log", interval_s=0.02) as hook:
        for step in range(5):
            hook.step(step, loss=1.0 / (step + 1))
        hook.log({"val/loss": 0.5, "val/acc": 0.75}, step=4)
        hook.log(4, val_f1=0.5)  # the keyword form, step first
        hook.log({"val/loss": 0.25})  # no step: the last one recorded
        hook.log(step=5, lr_scale=True)
    points = fake.state.points
    rid = hook.run_id
    assert points(rid, "val/loss") == [(4, 0.5), (4, 0.25)]
    assert points(rid, "val/acc") == [(4, 0.75)]
    assert points(rid, "val_f1") == [(4, 0.5)]
    assert points(rid, "lr_scale") == [(5, 1.0)]
    assert hook.stats["errors"] == 0


def test_url_token_and_mode_come_from_the_environment(fake: FakeDaemon,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHYTHMD_URL", fake.url)
    monkeypatch.setenv("RHYTHMD_MODE", "advise")
    monkeypatch.setenv("RHYTHMD_TOKEN", "env-token")
    with RhythmHook(run_name="env", interval_s=0.02) as hook:
        hook.step(0, loss=1.0)
    assert hook.mode == "advise"
    assert [p for _, p in fake.state.points(hook.run_id, "loss")] == [1.0]
    assert hook._tr is None or hook._tr._caller.http._auth == "Bearer env-token"
    explicit = RhythmHook(fake.url, run_name="arg", mode="apply", token="arg-token")
    assert explicit.mode == "apply" and explicit._tr._caller.http._auth == "Bearer arg-token"
    explicit.close()


class WatchedOptimizer:
    """An optimizer stand-in that counts every access to its param groups."""

    def __init__(self) -> None:
        self.reads = 0
        self._groups = [{"lr": 0.1}]

    @property
    def param_groups(self) -> list[dict[str, float]]:
        self.reads += 1
        return self._groups


def test_disabled_mode_touches_neither_network_nor_optimizer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as lsock:  # counts connection attempts: none may come
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        lsock.settimeout(0.3)
        monkeypatch.setenv("RHYTHMD_URL", f"http://127.0.0.1:{lsock.getsockname()[1]}")
        monkeypatch.setenv("RHYTHMD_MODE", "disabled")
        opt = WatchedOptimizer()
        hook = RhythmHook(run_name="off", optimizer=opt, interval_s=0.01)
        for step in range(300):
            hook.step(step, loss=float("nan"))
        hook.log({"val/loss": 1.0}, step=299)
        hook.flush()
        time.sleep(0.05)
        stats = hook.close()
        with pytest.raises(TimeoutError):
            lsock.accept()
    assert opt.reads == 0 and opt._groups == [{"lr": 0.1}]
    assert hook.disabled and hook.run_id is None and stats["sent"] == 0
    assert hook.state_dict()["run_id"] is None


def test_state_dict_continues_the_run_on_a_new_branch(fake: FakeDaemon) -> None:
    with RhythmHook(fake.url, run_name="first", interval_s=0.02) as first:
        for step in range(10):
            first.step(step, loss=1.0)
        saved = first.state_dict()
    assert saved["run_id"] == first.run_id and saved["step"] == 9 and saved["branch"] == 0
    with RhythmHook(fake.url, run_name="second", interval_s=0.02,
                    run_id=saved["run_id"]) as second:
        second.load_state_dict(saved)
        for step in range(10, 15):
            second.step(step, loss=0.5)
    assert second.run_id == first.run_id and len(fake.state.runs) == 1
    assert second.branch == 1 and second.branch_start == 10
    assert fake.state.points(first.run_id, "loss", branch=1) == [(s, 0.5) for s in range(10, 15)]
    with pytest.raises(ValueError, match="version"):
        second.load_state_dict({"version": 99})
