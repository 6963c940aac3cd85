"""How the scores move when each analysis or policy constant changes by -50 % and +50 %.

For every detector constant: divergence recall / false alarms, stagnation recall / early
alarms and oscillation F1 on each labelled corpus given (the dev corpus, our validation
corpus), and the probe suite's two counts (no-action probes acted on, must-catch probes
caught). For every policy constant: the probe counts. Scores come from the same code paths as
``bench/eval_detectors.py`` and ``bench/probes.py``.

    python bench/sensitivity.py ../shared/corpus/dev bench/data/validation --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from rhythmd.analysis import AnalysisConfig
from rhythmd.eval import harness
from rhythmd.eval.probes import catalogue, run_probe
from rhythmd.policy import PolicyConfig

DETECTOR = ("div_z", "div_z_recent", "div_sigma_floor", "div_baseline_steps", "div_trend_steps",
            "div_horizon_steps", "div_recover_steps", "div_confirm_steps", "div_extreme",
            "spike_z", "stag_window_frac", "stag_min_evals", "stag_alpha", "stag_min_gain",
            "stag_proj_gain", "osc_min_amp", "osc_max_drift_ratio", "osc_open_evals",
            "osc_close_evals", "osc_close_ratio", "collapse_min_progress",
            "slow_min_total_gain", "slow_max_total_log_gain")
POLICY = ("reduce_factor", "rollback_cut", "trial_z", "trial_min_rel", "schedule_decay_ratio",
          "final_fraction", "diverged_lr_margin", "max_increase", "episode_reset_steps")
_ROW = re.compile(r"^\| rhythmd \| (.+)$")


def _value(cls: type, name: str, factor: float) -> float | int:
    default = {f.name: f.default for f in dataclasses.fields(cls)}[name]
    if default is None:  # budget-relative defaults: use the 5,000-step probes' value
        default = 500
    v = default * factor
    return max(1, round(v)) if isinstance(default, int) else v


def corpus_scores(corpus: Path, overrides: dict[str, float | int], jobs: int) -> str:
    """``div R/FA, stag R/early, osc F1`` of the ALL table for one corpus."""
    argv = [str(corpus), "--jobs", str(jobs)]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        harness.main(argv)
    text = buf.getvalue()
    tail = text[text.rfind("### ALL"):] if "### ALL" in text else text
    rows = [m.group(1).split(" | ") for line in tail.splitlines() if (m := _ROW.match(line))]
    div, stag, osc = rows[0], rows[1], rows[2]
    return (f"{div[0].split()[0]}/{div[1].split()[0]} {stag[0].split()[0]}/"
            f"{stag[1].split()[0]} {osc[2]}")


def probe_scores(analysis: dict[str, float | int], policy: dict[str, float | int]) -> str:
    acted = caught = n_none = n_catch = 0
    for p in catalogue():
        rc = {**p.run_config, "analysis": analysis, "policy": policy}
        r = run_probe(dataclasses.replace(p, run_config=rc))
        if p.must_catch:
            n_catch += 1
            caught += r.passed
        else:
            n_none += 1
            acted += not r.passed
    return f"{acted}/{n_none} acted, {caught}/{n_catch} caught"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpora", type=Path, nargs="*")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="these constants only")
    a = ap.parse_args(argv)
    names = [*DETECTOR, *POLICY]
    if a.only:
        names = [n for n in names if n in a.only]
    head = ["constant", "x", *[c.name for c in a.corpora], "probes"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    t0 = time.perf_counter()
    for name in ["(defaults)", *names]:
        for factor in ((1.0,) if name == "(defaults)" else (0.5, 1.5)):
            det = name in DETECTOR
            over = {} if name == "(defaults)" else {
                name: _value(AnalysisConfig if det else PolicyConfig, name, factor)}
            cells = [corpus_scores(c, over, a.jobs) if det or not over else "="
                     for c in a.corpora]
            probes = probe_scores(over if det else {}, {} if det else over)
            shown = "" if not over else f"{over[name]:g}"
            print(f"| {name} | {shown} | " + " | ".join([*cells, probes]) + " |", flush=True)
    print(f"\n(cells: divergence recall/false alarms, stagnation recall/early alarms, "
          f"oscillation F1; {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
