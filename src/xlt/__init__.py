"""xlt: cross-lingual transfer of language models.

Take a pretrained LM that is good in one language and make it good in another:
train a target tokenizer, initialise its embeddings from the source model
(``xlt.vocab``), continue training (``xlt.adapt``), evaluate (``xlt.eval``) and
report (``xlt.report``).
"""

from xlt.errors import XltError

__version__ = "0.1.0"
__all__ = ["XltError", "__version__"]
