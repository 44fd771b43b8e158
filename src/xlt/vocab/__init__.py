"""Vocabulary: target tokenizers and embedding initialisation for a new vocabulary.

Methods are registered by name (``INITS``, built-ins loaded on the first lookup), each with an options
dataclass; each returns a :class:`TransferMapping` that
:func:`transfer_model` applies to input embeddings and untied heads alike.
"""

from xlt.vocab.canon import canonical_vocab, tokenizer_kind
from xlt.vocab.mapping import TransferMapping, mix_rows
from xlt.vocab.registry import INITS, TransferContext, available_inits, get_init, parse_inits, register_init
from xlt.vocab.tokenizer import fertility, min_vocab_size, train_tokenizer
from xlt.vocab.transfer import build_mapping, transfer_embeddings, transfer_model

__all__ = ["INITS", "TransferContext", "TransferMapping", "available_inits", "build_mapping", "canonical_vocab",
           "fertility", "get_init", "min_vocab_size", "mix_rows", "parse_inits", "register_init", "tokenizer_kind",
           "train_tokenizer", "transfer_embeddings", "transfer_model"]
