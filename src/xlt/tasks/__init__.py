"""Task modules for cross-lingual transfer: retrieval over language adapters, bilingual lexicon induction, transfer
losses, tool-call and language-grid evaluation. Each part is one file of this package that registers its losses
and modules (:mod:`xlt.tasks.registry`); ``xlt losses`` lists them."""

from xlt.tasks.registry import LOSSES, MODULES, register_loss, register_module

__all__ = ["LOSSES", "MODULES", "register_loss", "register_module"]
