"""``rhythmd schedule SPEC… --steps N``: LR schedules computed by the real torch schedulers.

Spec grammar (documented in ``docs/cli.md`` and in ``--help``)::

    spec   := phase ("," phase | "," key=value)*
    phase  := KIND [":" (LENGTH | key=value)]
    LENGTH := INT (steps) | NUMBER "%" (of --steps)

A comma-separated item that starts with a known kind begins a new phase; a ``key=value`` item
adds a parameter to the phase before it. Every phase but the last needs a LENGTH; the last runs
to the end. Phases are chained with ``SequentialLR`` (each child counts its own steps from the
start of its phase). Lists use ``|`` (``milestones=30|60``); step counts may be given as
``N%`` of ``--steps``. A SPEC that starts with ``{`` is a recommendation's ``set_schedule``
params (or the whole recommendation), applied from step 0 with base LR ``--lr``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhythmd.cli._http import EXIT_CODES

MAX_STEPS = 10_000_000

# kind -> (torch class, {param: (type, default)}); default None = required, "LEN" = the phase
# length, "LR" = --lr. Types: "int" (steps, may be N%), "float", "ints" (steps, |-separated),
# "str".
KINDS: dict[str, tuple[str, dict[str, tuple[str, Any]]]] = {
    "constant": ("ConstantLR", {"factor": ("float", 1.0)}),
    "warmup": ("LinearLR", {"start_factor": ("float", 0.01), "end_factor": ("float", 1.0)}),
    "linear": ("LinearLR", {"start_factor": ("float", 1.0), "end_factor": ("float", 0.0)}),
    "cosine": ("CosineAnnealingLR", {"T_max": ("int", "LEN"), "eta_min": ("float", 0.0)}),
    "restarts": ("CosineAnnealingWarmRestarts", {"T_0": ("int", "LEN"), "T_mult": ("int", 1),
                                                 "eta_min": ("float", 0.0)}),
    "step": ("StepLR", {"step_size": ("int", None), "gamma": ("float", 0.1)}),
    "multistep": ("MultiStepLR", {"milestones": ("ints", None), "gamma": ("float", 0.1)}),
    "exponential": ("ExponentialLR", {"gamma": ("float", None)}),
    "poly": ("PolynomialLR", {"power": ("float", 1.0)}),
    "onecycle": ("OneCycleLR", {"max_lr": ("float", "LR"), "pct_start": ("float", 0.3),
                                "anneal_strategy": ("str", "cos"),
                                "div_factor": ("float", 25.0),
                                "final_div_factor": ("float", 1e4)}),
}
# kinds whose torch class takes the phase length as total_iters / total_steps
_LENGTH_ARG = {"constant": "total_iters", "warmup": "total_iters", "linear": "total_iters",
               "poly": "total_iters", "onecycle": "total_steps"}

SPEC_HELP = """spec grammar:
  SPEC   := PHASE ("," PHASE | "," key=value)*      PHASE := KIND[":"LENGTH | ":"key=value]
  LENGTH := steps (500) or a percentage of --steps (5%); every phase but the last needs one,
            the last runs to the end; phases are chained with SequentialLR.
  kinds (torch class; parameters, default):
    constant     ConstantLR        factor=1.0
    warmup       LinearLR          start_factor=0.01, end_factor=1.0 (linear ramp over LENGTH)
    linear       LinearLR          start_factor=1.0, end_factor=0.0 (linear decay over LENGTH)
    cosine       CosineAnnealingLR T_max=LENGTH, eta_min=0
    restarts     CosineAnnealingWarmRestarts  T_0=LENGTH, T_mult=1, eta_min=0
    step         StepLR            step_size (required), gamma=0.1
    multistep    MultiStepLR       milestones=30|60 (required, from the phase start), gamma=0.1
    exponential  ExponentialLR     gamma (required)
    poly         PolynomialLR      power=1.0 (to 0 over LENGTH)
    onecycle     OneCycleLR        max_lr=--lr, pct_start=0.3, anneal_strategy=cos,
                                   div_factor=25, final_div_factor=1e4 (must be the only phase)
  step counts (T_max, step_size, milestones, T_0) may also be N% of --steps.
  A SPEC starting with '{' is a recommendation's set_schedule params, e.g.
    '{"kind": "cosine", "T_max": 300, "eta_min": 1e-6}' or '{"kind": "multistep",
    "milestones": [100, 200], "gamma": 0.5}' (or the whole {"action": "set_schedule",
    "params": {...}}): what the client would do from the step it applies it, with LR --lr.

examples:
  rhythmd schedule "warmup:5%,cosine:eta_min=1e-6" "step:step_size=30,gamma=0.1" --steps 100
  rhythmd schedule "multistep:milestones=30%|60%" --steps 1000 --lr 0.1 --plot lr.png
  rhythmd schedule "warmup:500,cosine" --steps 10000 --export python > sched.py"""


class SpecError(ValueError):
    """A spec that does not parse or that torch refuses."""


@dataclass
class Plan:
    """One schedule: torch scheduler classes with their keyword arguments, chained at
    ``milestones`` by SequentialLR when there are several."""

    spec: str
    steps: int
    lr: float
    schedulers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    milestones: list[int] = field(default_factory=list)
    description: str = ""

    def boundaries(self) -> list[int]:
        """Steps where something changes (phase starts and the children's own milestones)."""
        out = list(self.milestones)
        starts = [0, *self.milestones]
        ends = [*self.milestones, self.steps]
        for (cls, kw), s0, s1 in zip(self.schedulers, starts, ends, strict=True):
            if cls == "MultiStepLR":
                out += [s0 + m for m in kw["milestones"]]
            elif cls == "LinearLR":
                out.append(s0 + kw["total_iters"])
            elif cls == "StepLR":
                out += list(range(s0 + kw["step_size"], s1, kw["step_size"]))[:6]
            elif cls == "CosineAnnealingWarmRestarts":
                t, length = s0, kw["T_0"]
                while t + length < s1 and len(out) < 32:
                    t += length
                    out.append(t)
                    length *= kw["T_mult"]
            elif cls == "OneCycleLR":
                out.append(s0 + round(kw["pct_start"] * kw["total_steps"]))
        return sorted({b for b in out if 0 < b < self.steps})


# --------------------------------------------------------------------------------- parsing
def _length(text: str, steps: int, what: str) -> int:
    text = text.strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise SpecError(f"{what}: {text} is not a percentage in [0, 100]")
            return round(steps * pct / 100.0)
        value = float(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not a step count (500) or a percentage (5%)"
                        ) from None
    if value != int(value) or value < 0:
        raise SpecError(f"{what}: {text!r} must be a whole number of steps or a percentage; "
                        f"write {text}% for a fraction of --steps")
    return int(value)


def _value(kind: str, key: str, typ: str, text: str, steps: int) -> Any:
    what = f"{kind}:{key}"
    if typ == "int":
        return _length(text, steps, what)
    if typ == "ints":
        vals = [_length(t, steps, what) for t in text.split("|") if t.strip()]
        if not vals:
            raise SpecError(f"{what} needs a |-separated list of steps, e.g. 30|60")
        return sorted(set(vals))
    if typ == "str":
        return text.strip()
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not a number") from None


def _split_phases(spec: str) -> list[tuple[str, str | None, list[str]]]:
    """``spec`` -> [(kind, length text or None, ["key=value", ...])]."""
    phases: list[tuple[str, str | None, list[str]]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        head, _, rest = item.partition(":")
        head = head.strip().lower()
        if head in KINDS:
            length = None
            params: list[str] = []
            for part in (rest.split(":") if rest else []):
                part = part.strip()
                if "=" in part:
                    params.append(part)
                elif part:
                    if length is not None:
                        raise SpecError(f"{item!r}: two lengths")
                    length = part
            phases.append((head, length, params))
        elif "=" in item and phases:
            phases[-1][2].append(item)
        elif "=" in item:
            raise SpecError(f"{item!r}: a parameter before any kind; start with a kind, "
                            f"e.g. cosine:{item}")
        else:
            close = [k for k in KINDS if k.startswith(head[:3])] if head else []
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SpecError(f"unknown schedule kind {head!r}{hint}; kinds: {', '.join(KINDS)}")
    if not phases:
        raise SpecError("empty spec; e.g. cosine or warmup:5%,cosine:eta_min=1e-6")
    return phases


def parse_spec(spec: str, steps: int, lr: float) -> Plan:
    """A spec string (or set_schedule JSON) -> a :class:`Plan` of torch schedulers."""
    if steps < 1:
        raise SpecError("--steps must be at least 1")
    if spec.lstrip().startswith("{"):
        return _from_set_schedule(spec, steps, lr)
    phases = _split_phases(spec)
    plan = Plan(spec=spec, steps=steps, lr=lr)
    start = 0
    for i, (kind, length_text, params) in enumerate(phases):
        last = i == len(phases) - 1
        if length_text is None and not last:
            raise SpecError(f"phase {i + 1} ({kind}) needs a length because another phase "
                            f"follows, e.g. {kind}:10% or {kind}:500")
        length = steps - start if length_text is None else _length(length_text, steps, kind)
        if length < 1:
            raise SpecError(f"phase {i + 1} ({kind}) has length {length}: give at least 1 step")
        if not last and start + length >= steps:
            raise SpecError(f"phase {i + 1} ({kind}) ends at step {start + length}, leaving no "
                            f"steps of the {steps} for the phases after it")
        if last:
            length = steps - start  # the last phase always runs to the end
        cls, allowed = KINDS[kind]
        given: dict[str, Any] = {}
        for p in params:
            key, _, val = p.partition("=")
            key = key.strip()
            if key not in allowed:
                raise SpecError(f"{kind} takes no parameter {key!r}; it takes "
                                f"{', '.join(allowed) or 'none'}")
            given[key] = _value(kind, key, allowed[key][0], val, steps)
        kw: dict[str, Any] = {}
        for key, (_typ, default) in allowed.items():
            if key in given:
                kw[key] = given[key]
            elif default is None:
                raise SpecError(f"{kind} needs {key}=..., e.g. {_example(kind)}")
            elif default == "LEN":
                kw[key] = length
            elif default == "LR":
                kw[key] = lr
            else:
                kw[key] = default
        if kind in _LENGTH_ARG:
            kw[_LENGTH_ARG[kind]] = length
        if kind == "onecycle" and len(phases) > 1:
            raise SpecError("onecycle sets its own warmup and decay: use it as the only phase")
        plan.schedulers.append((cls, kw))
        if not last:
            plan.milestones.append(start + length)
        start += length
    plan.description = describe(plan)
    return plan


def _example(kind: str) -> str:
    return {"step": "step:step_size=30,gamma=0.1", "multistep": "multistep:milestones=30|60",
            "exponential": "exponential:gamma=0.99"}.get(kind, kind)


def _from_set_schedule(text: str, steps: int, lr: float) -> Plan:
    """A recommendation's ``set_schedule`` params, as the client applies them from the
    current LR (here ``lr``) at the step it applies them (here step 0)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecError("the JSON spec must be an object")
    if "action" in doc:
        if doc["action"] != "set_schedule":
            raise SpecError(f"only set_schedule recommendations change the schedule shape; "
                            f"{doc['action']!r} scales the current LR")
        doc = doc.get("params") or {}
    from rhythmd.errors import InvalidInputError
    from rhythmd.recommendations import validate_action

    params = dict(doc)
    ef = params.pop("eta_min_factor", None)
    try:
        validate_action("set_schedule", params, loc=("params",))
    except InvalidInputError as exc:
        raise SpecError(f"invalid set_schedule params: {exc}") from None
    plan = Plan(spec=text, steps=steps, lr=lr)
    if params["kind"] == "cosine":
        t_max = int(params["T_max"])
        if ef is not None:
            if not isinstance(ef, (int, float)) or not 0 <= ef <= 1:
                raise SpecError("eta_min_factor must be in [0, 1]")
            if "eta_min" in params:
                raise SpecError("give eta_min or eta_min_factor, not both")
            eta = ef * lr
        else:
            eta = float(params.get("eta_min", 0.0))
        eta = min(eta, lr)
        plan.schedulers.append(("CosineAnnealingLR", {"T_max": t_max, "eta_min": eta}))
        if t_max < steps:
            # the client holds eta_min after T_max (torch's cosine would rise again)
            factor = eta / lr if lr > 0 else 0.0
            plan.schedulers.append(("ConstantLR", {"factor": factor,
                                                   "total_iters": steps - t_max + 1}))
            plan.milestones.append(t_max)
    else:
        plan.schedulers.append(("MultiStepLR", {"milestones": sorted(set(params["milestones"])),
                                                "gamma": float(params.get("gamma", 0.1))}))
    plan.description = describe(plan)
    return plan


def describe(plan: Plan) -> str:
    parts = [f"{cls}({', '.join(f'{k}={_fmt(v)}' for k, v in kw.items())})"
             for cls, kw in plan.schedulers]
    if len(parts) == 1:
        return parts[0]
    return f"SequentialLR([{', '.join(parts)}], milestones={plan.milestones})"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else str(v)


# ----------------------------------------------------------------------------- computing
def _torch() -> Any:
    try:
        import torch
    except ImportError:
        from rhythmd.cli import CommandError

        raise CommandError("rhythmd schedule steps the real torch schedulers and needs "
                           "PyTorch: pip install 'rhythmd[torch]'", 2) from None
    return torch


def build(plan: Plan, optimizer: Any) -> Any:
    """Instantiate ``plan`` on ``optimizer`` (what :func:`export_python`'s code does)."""
    from torch.optim import lr_scheduler

    children = [getattr(lr_scheduler, cls)(optimizer, **kw) for cls, kw in plan.schedulers]
    if len(children) == 1:
        return children[0]
    return lr_scheduler.SequentialLR(optimizer, schedulers=children,
                                     milestones=list(plan.milestones))


def compute(plan: Plan) -> list[float]:
    """The LR each of the ``plan.steps`` optimizer steps uses, by stepping torch."""
    torch = _torch()
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=plan.lr, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sched = build(plan, opt)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"torch refused {plan.description}: {exc}") from None
        lrs: list[float] = []
        for t in range(plan.steps):
            lrs.append(float(opt.param_groups[0]["lr"]))
            if t == plan.steps - 1:
                break
            opt.step()
            sched.step()
    return lrs


# ------------------------------------------------------------------------------- export
def export_python(plans: list[Plan]) -> str:
    """Python source defining ``build_scheduler(optimizer)`` (``build_scheduler_2``, … for
    further specs) that builds each schedule with torch."""
    classes = sorted({cls for p in plans for cls, _ in p.schedulers}
                     | ({"SequentialLR"} if any(len(p.schedulers) > 1 for p in plans) else set()))
    lines = ['"""LR schedules exported by `rhythmd schedule`.',
             "",
             "    optimizer = torch.optim.SGD(model.parameters(), lr=...)",
             "    scheduler = build_scheduler(optimizer)",
             "    # in the loop: optimizer.step(); scheduler.step()",
             '"""',
             "",
             f"from torch.optim.lr_scheduler import {', '.join(classes)}"]
    for i, p in enumerate(plans):
        name = "build_scheduler" if i == 0 else f"build_scheduler_{i + 1}"
        spec = " ".join(p.spec.split())
        lines += ["", "",
                  f"def {name}(optimizer):",
                  f'    """{_doc_escape(spec)}: {p.steps} steps (made for lr={p.lr:g})."""']
        calls = [f"{cls}(optimizer, {', '.join(f'{k}={v!r}' for k, v in kw.items())})"
                 for cls, kw in p.schedulers]
        if len(calls) == 1:
            lines.append(f"    return {calls[0]}")
        else:
            lines.append("    return SequentialLR(")
            lines.append("        optimizer,")
            lines.append("        schedulers=[")
            lines += [f"            {c}," for c in calls]
            lines.append("        ],")
            lines.append(f"        milestones={list(p.milestones)!r},")
            lines.append("    )")
    return "\n".join(lines) + "\n"


def _doc_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


# ---------------------------------------------------------------------------------- CLI
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule", help="compute, compare, plot and export LR schedules (torch)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute LR schedules by stepping the real torch.optim.lr_scheduler "
                    "classes, compare several (LR at key steps), plot them and export the "
                    "torch code that builds them.",
        epilog=SPEC_HELP + "\n\n" + EXIT_CODES)
    p.add_argument("specs", nargs="+", metavar="SPEC", help="schedule spec (see below)")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps to compute")
    p.add_argument("--lr", type=float, default=0.1, help="base LR of the optimizer (default 0.1)")
    p.add_argument("--plot", type=Path, metavar="OUT", help="write an overlaid plot (.png/.svg)")
    p.add_argument("--log-y", action="store_true", help="log-scale LR axis in the plot")
    p.add_argument("--export", choices=["python"], help="print the torch code that builds "
                   "each schedule (build_scheduler, build_scheduler_2, ...)")
    p.add_argument("--json", action="store_true", help="print every step's LR as JSON")
    p.set_defaults(func=run)


def key_steps(plans: list[Plan], steps: int) -> list[int]:
    marks = {0, steps - 1, steps // 4, steps // 2, (3 * steps) // 4}
    for p in plans:
        for b in p.boundaries():
            marks.update((b - 1, b))
    out = sorted(m for m in marks if 0 <= m < steps)
    if len(out) > 24:  # keep the table readable: quarters, ends and the first boundaries
        keep = {0, steps - 1, steps // 4, steps // 2, (3 * steps) // 4}
        out = sorted(keep | set(out[:24 - len(keep)]))
    return out


def run(args: argparse.Namespace) -> int:
    from rhythmd.cli import CommandError

    if not 1 <= args.steps <= MAX_STEPS:
        raise CommandError(f"--steps must be between 1 and {MAX_STEPS}", 2)
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise CommandError("--lr must be a positive number", 2)
    if args.plot is not None:
        from rhythmd.cli._plot import check_output

        check_output(args.plot)
    plans: list[Plan] = []
    for spec in args.specs:
        try:
            plans.append(parse_spec(spec, args.steps, args.lr))
        except SpecError as exc:
            raise CommandError(f"spec {spec!r}: {exc}", 2) from None
    curves: list[list[float]] = []
    for plan in plans:
        try:
            curves.append(compute(plan))
        except SpecError as exc:
            raise CommandError(f"spec {plan.spec!r}: {exc}", 2) from None
    if args.export == "python":
        sys.stdout.write(export_python(plans))
    elif args.json:
        print(json.dumps({"steps": args.steps, "lr": args.lr, "schedules": [
            {"spec": p.spec, "torch": p.description, "milestones": p.milestones, "lrs": c}
            for p, c in zip(plans, curves, strict=True)]}))
    else:
        _print_table(plans, curves, args.steps)
    if args.plot is not None:
        from rhythmd.cli._plot import plot_schedules

        plot_schedules([(p.spec, c) for p, c in zip(plans, curves, strict=True)], args.plot,
                       log_y=args.log_y, title=f"LR schedules over {args.steps} steps "
                                               f"(lr={args.lr:g})")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _short(spec: str) -> str:
    spec = re.sub(r"\s+", " ", spec)
    return spec if len(spec) <= 40 else spec[:37] + "..."


def _print_table(plans: list[Plan], curves: list[list[float]], steps: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rhythmd.cli.query import console as make_console

    console = make_console()
    for i, p in enumerate(plans):
        console.print(f"[bold]#{i + 1}[/bold]  {escape(p.spec)}\n"
                      f"   [dim]{escape(p.description)}[/dim]", highlight=False, soft_wrap=True)
    table = Table(title=f"LR at key steps ({steps} steps)", title_justify="left")
    table.add_column("step", justify="right")
    for i, p in enumerate(plans):
        table.add_column(f"#{i + 1}" if len(plans) > 2 else _short(p.spec), justify="right",
                         no_wrap=True)
    for s in key_steps(plans, steps):
        table.add_row(str(s), *(f"{c[s]:.4g}" for c in curves))
    table.add_section()
    table.add_row("min", *(f"{min(c):.4g}" for c in curves))
    table.add_row("max", *(f"{max(c):.4g}" for c in curves))
    table.add_row("mean", *(f"{sum(c) / len(c):.4g}" for c in curves))
    console.print(table)
