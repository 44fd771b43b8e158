"""Generation: hedged sampling pools decoded in one loop (:mod:`xlt.infer.decode`), MBR / X-MBR selection
(:mod:`xlt.infer.mbr`, vectorised chrF in :mod:`xlt.infer.chrf`), sentence embeddings (:mod:`xlt.infer.embed`), and
``xlt generate`` (:func:`generate`, in :mod:`xlt.infer.run`)."""

from xlt.infer.run import generate

__all__ = ["generate"]
