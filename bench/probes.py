"""Stream every probe of the catalogue (rhythmd/eval/probes.py) through the analyzer and the
policy, as the daemon would, and print what each got against what a careful engineer expects.

Usage: python bench/probes.py [--seed 0] [--batch-steps 50] [--only SUBSTRING] [--json]
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


def table(results: list[ProbeResult]) -> str:
    """The per-probe table and the two totals, as text."""
    rows = [("probe", "family", "expectation", "diagnoses", "actions", "result")]
    for r in results:
        rows.append((r.probe, r.family, r.expectation,
                     _cell([f"{d.kind}{'/' + d.cause if d.cause else ''}@{d.step}"
                            for d in r.diagnoses]),
                     _cell([f"{a.action}@{a.step}" for a in r.actions]),
                     ("pass" if r.passed else "FAIL")
                     + (f": {r.verdict}" if r.must_catch else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
             for row in rows]
    calm = [r for r in results if not r.must_catch]
    must = [r for r in results if r.must_catch]
    lines += ["",
              f"no-action probes acted on: {sum(not r.passed for r in calm)} of {len(calm)}",
              f"must-catch caught: {sum(r.passed for r in must)} of {len(must)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-steps", type=int, default=50,
                    help="steps per streamed batch (default 50)")
    ap.add_argument("--only", help="only probes whose name contains this")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    probes = [p for p in catalogue(args.seed) if not args.only or args.only in p.name]
    results = [run_probe(p, args.batch_steps) for p in probes]
    secs = time.perf_counter() - t0
    if args.json:
        calm = [r for r in results if not r.must_catch]
        must = [r for r in results if r.must_catch]
        print(json.dumps({"seed": args.seed, "batch_steps": args.batch_steps,
                          "seconds": round(secs, 2),
                          "no_action_acted_on": sum(not r.passed for r in calm),
                          "no_action_probes": len(calm),
                          "must_catch_caught": sum(r.passed for r in must),
                          "must_catch_probes": len(must),
                          "results": [r.to_dict() for r in results]}, indent=2))
    else:
        print(table(results))
        print(f"({len(results)} probes, seed {args.seed}, batches of {args.batch_steps} steps, "
              f"{secs:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
