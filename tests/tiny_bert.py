"""A word-level tokenizer and a tiny random BERT for the task-module tests (retrieval, rerankers): words ``w0…w59``,
the E5 prefix words, optional punctuation."""

from __future__ import annotations

import random

import torch

WORDS = [f"w{i}" for i in range(60)]
PUNCT = [".", ",", "!", "?"]


def texts(seed: int, n: int, punct: bool = False, max_words: int = 10) -> list[str]:
    """``n`` random word sequences (3…``max_words`` words; a punctuation mark at the end with ``punct``)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, max_words))) + (rng.choice(PUNCT) if punct else "")
            for _ in range(n)]


def word_tokenizer(punct: bool = False):
    """A BERT-style fast tokenizer over :data:`WORDS` (and :data:`PUNCT`): [PAD]=0, [CLS]=2, [SEP]=3, [MASK]=4."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + ["query", ":", "passage"] + WORDS + (PUNCT if punct else []))}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_bert(tok, seed: int = 0):
    """A random 2-layer BERT (d = 32) over ``tok``'s vocabulary, in eval mode."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    return BertModel(cfg, add_pooling_layer=False).eval()
