"""``rhythmd eval CORPUS_DIR``: score the detectors and today's rules on a labelled corpus."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="score the detectors on a labelled curve corpus", add_help=False,
        description="Replay every run of a corpus through the online analysis and score it "
                    "against its labels, side by side with the baseline rules.")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rhythmd.eval.harness import main

    return int(main(args.rest) or 0)
