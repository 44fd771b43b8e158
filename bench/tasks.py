"""Benchmarks of the task modules (issue 18): one entry point for the two parts.

    python bench/tasks.py [--part all|maxsim|bli] [-- extra arguments for the part]

- ``maxsim``: ``bench/tasks_maxsim.py`` (exact MaxSim top-10, 200 queries × 5,000 e5-encoded verses, against a
  Python loop over query × document pairs and a padded-batch einsum) → ``bench/results/tasks_maxsim.json``;
- ``bli``: ``bench/tasks_bli.py`` (CSLS BLI both directions from one pass against vecmap's formula in NumPy, run per
  direction) → ``bench/results/tasks_bli.json``.

Each part runs in its own process with ``OMP_NUM_THREADS=1`` (the figures in ``docs/tasks.md`` are one thread) and
prints its table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {"maxsim": "tasks_maxsim.py", "bli": "tasks_bli.py"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="all", choices=("all", *PARTS))
    a, extra = ap.parse_known_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for part in (list(PARTS) if a.part == "all" else [a.part]):
        print(f"== {part}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / PARTS[part]), *extra], env=env).returncode
        if rc:
            sys.exit(rc)


if __name__ == "__main__":
    main()
