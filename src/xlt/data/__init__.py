"""Data preparation: romanisation (uroman) of corpora."""

from xlt.data.romanize import RomanizedCorpus, romanize_texts

__all__ = ["RomanizedCorpus", "romanize_texts"]
