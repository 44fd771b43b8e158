"""One error type for every user-facing failure.

Each error names the problem and the fix. The CLI prints it without a traceback;
Python users can catch :class:`XltError`.
"""

from __future__ import annotations


class XltError(Exception):
    """A problem with the user's input or environment, with the fix to apply."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\nFix: {fix}")
