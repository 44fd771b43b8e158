"""Benchmarks of the task modules (issue 18): one entry point for the two parts.

    python bench/tasks.py [--part all|maxsim|bli] [-- extra arguments for the part]

- ``maxsim``: ``bench/tasks_maxsim.py`` (exact MaxSim top-10, 200 queries × 5,000 e5-encoded verses, against a
  Python loop over query × document pairs and a padded-batch einsum) → ``bench/results/tasks_maxsim.json``;
- ``bli``: ``bench/tasks_bli.py`` (CSLS BLI both directions from one pass against vecmap's formula in NumPy, run per
  direction) → ``bench/results/tasks_bli.json``.

Each part runs in its own process and prints its table; it sets its own thread counts (``maxsim``: every route at 1
and at 2 threads, ``--threads``; ``bli``: one thread).
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
    for part in (list(PARTS) if a.part == "all" else [a.part]):
        print(f"== {part}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        if part == "bli":  # NumPy's BLAS (vecmap's side) follows the environment, not torch.set_num_threads
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        rc = subprocess.run([sys.executable, str(HERE / PARTS[part]), *extra], env=env).returncode
        if rc:
            sys.exit(rc)


if __name__ == "__main__":
    main()
