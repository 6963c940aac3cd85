"""Stream every probe of the catalogue (rhythmd/eval/probes.py) through the analyzer and the
policy, as the daemon would, and print what each got against what a careful engineer expects.

Usage: python bench/probes.py [--seeds 1] [--batch-steps 50] [--only SUBSTRING]
                             [--json | --markdown]

The table shows seed 0's diagnoses and actions; with ``--seeds N`` (seeds 0..N-1, other noise
draws of the same curves) the result column also says on how many seeds each probe passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rhythmd.eval.probes import ProbeResult, catalogue, run_probe


def _cell(items: list[str], most: int = 4) -> str:
    if not items:
        return "-"
    head = ", ".join(items[:most])
    return head + (f" (+{len(items) - most})" if len(items) > most else "")


def counts(results: list[ProbeResult]) -> dict[str, int]:
    """No-action probes acted on, must-catch probes caught, and how many of each."""
    calm = [r for r in results if not r.must_catch]
    must = [r for r in results if r.must_catch]
    return {"no_action_acted_on": sum(not r.passed for r in calm),
            "no_action_probes": len(calm),
            "must_catch_caught": sum(r.passed for r in must),
            "must_catch_probes": len(must)}


def table(by_seed: list[list[ProbeResult]], markdown: bool = False) -> str:
    """Per-probe rows (seed 0's diagnoses and actions) and the totals per seed, as aligned
    text or a Markdown table."""
    rows = [("probe", "family", "expectation", "diagnoses", "actions", "result")]
    for i, r in enumerate(by_seed[0]):
        result = ("pass" if r.passed else "FAIL") + (f": {r.verdict}" if r.must_catch else "")
        if len(by_seed) > 1:
            result += f" (seeds passed {sum(s[i].passed for s in by_seed)}/{len(by_seed)})"
        rows.append((r.probe, r.family, r.expectation,
                     _cell([f"{d.kind}{'/' + d.cause if d.cause else ''}@{d.step}"
                            for d in r.diagnoses]),
                     _cell([f"{a.action}@{a.step}" for a in r.actions]), result))
    if markdown:
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True))
                 + "  " + row[5] for row in rows]
    cs = [counts(results) for results in by_seed]
    per_seed = "" if len(cs) == 1 else " (seed 0; seeds 0-{}: {})"
    acted = [str(c["no_action_acted_on"]) for c in cs]
    caught = [str(c["must_catch_caught"]) for c in cs]
    return "\n".join([
        *lines, "",
        f"no-action probes acted on: {acted[0]} of {cs[0]['no_action_probes']}"
        + per_seed.format(len(cs) - 1, ", ".join(acted)),
        f"must-catch caught: {caught[0]} of {cs[0]['must_catch_probes']}"
        + per_seed.format(len(cs) - 1, ", ".join(caught))])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1, help="noise draws 0..N-1 (default 1)")
    ap.add_argument("--batch-steps", type=int, default=50,
                    help="steps per streamed batch (default 50)")
    ap.add_argument("--only", help="only probes whose name contains this")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    by_seed = [[run_probe(p, args.batch_steps) for p in catalogue(seed)
                if not args.only or args.only in p.name] for seed in range(max(1, args.seeds))]
    secs = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"batch_steps": args.batch_steps, "seconds": round(secs, 2),
                          "seeds": [{"seed": seed, **counts(results),
                                     "results": [r.to_dict() for r in results]}
                                    for seed, results in enumerate(by_seed)]}, indent=2))
    else:
        print(table(by_seed, args.markdown))
        print(f"({len(by_seed[0])} probes x {len(by_seed)} seed(s), batches of "
              f"{args.batch_steps} steps, {secs:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
