"""LazyContext: the LR phase is filled once, on the first read of an entry that is not eager."""

from __future__ import annotations

from typing import Any

from rhythmd.analysis.context import LazyContext


def test_eager_reads_do_not_fill_and_the_first_lazy_read_fills_once() -> None:
    calls: list[int] = []

    def fill(ctx: dict[str, Any]) -> None:
        calls.append(1)
        ctx.update({"lr": 0.1, "in_warmup": False})

    ctx = LazyContext(fill)
    ctx["train_mean"] = 2.0
    assert ctx.get("train_mean") == 2.0 and ctx["train_mean"] == 2.0 and "train_mean" in ctx
    assert calls == []
    assert ctx.get("lr") == 0.1
    assert ctx["in_warmup"] is False and "lr" in ctx and ctx.get("warmup_end_step") is None
    assert calls == [1]


def test_a_missing_key_fills_then_reads_as_a_dict_does() -> None:
    ctx = LazyContext(lambda c: c.update({"lr": 1.0}))
    assert "lr_constant_since" not in ctx
    assert ctx.get("lr_constant_since", "x") == "x" and ctx["lr"] == 1.0
