"""Controlled transfer studies on tiny models: ``xlt study clone`` (cloned languages, Schäfer et al. 2024) and
``xlt study matrix`` (MonoByte-style byte-level transfer matrix), with the shared tiny-LM training in
:mod:`xlt.study.lm`."""

from __future__ import annotations

__all__ = ["clone", "matrix"]


def clone(out, **options) -> dict:
    """``xlt study clone``: see :mod:`xlt.study.clone` (returns the metrics written to ``out/metrics.json``)."""
    from xlt.study.clone import run_clone_study

    return run_clone_study(out, **options)


def matrix(out, **options) -> dict:
    """``xlt study matrix``: see :mod:`xlt.study.matrix` (returns the metrics written to ``out/metrics.json``)."""
    from xlt.study.matrix import run_matrix_study

    return run_matrix_study(out, **options)
