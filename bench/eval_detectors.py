"""Score rhythmd's online detectors and the baselines on a curve corpus.

Usage: python bench/eval_detectors.py CORPUS_DIR [--jobs 2] [--task digits_mlp]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rhythmd.eval.harness import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
