"""``xlt analyze``: how a model represents and routes languages — alignment of sentence representations per
layer, logit/tuned lenses and the latent language, language-specific neurons (LAPE), MoE routing and steering —
from one capture pass per model (:mod:`xlt.analyze.capture`). Analyses are registered by name
(:mod:`xlt.analyze.registry`); :func:`analyze` runs them."""

from xlt.analyze.engine import AnalysisResult, aligned_texts, analyze

__all__ = ["analyze", "aligned_texts", "AnalysisResult"]
