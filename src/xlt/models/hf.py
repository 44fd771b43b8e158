"""Settings of the transformers library that loading and preparing models share."""

from __future__ import annotations


def quiet_transformers() -> None:
    """Silence transformers' per-tensor progress bars and info logs; xlt shows its own progress."""
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
