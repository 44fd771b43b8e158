"""Tiny models of every supported family and tiny tokenizers of every supported kind, for the contract tests.

Families: :data:`xlt.models.tiny.CAUSAL_FAMILIES` (Llama, Gemma-3, Qwen2, GPT-2 and two mixtures of experts), each
with a tied and an untied head. Tokenizers: byte-level BPE (SmolLM2's kind), SentencePiece Unigram with Metaspace
(XLM-R's kind) and SentencePiece BPE with byte fallback (Llama-2's and Gemma's kind). A family or tokenizer kind
added here is picked up by every contract test.
"""

from __future__ import annotations

from xlt.models.tiny import CAUSAL_FAMILIES, tiny_model

#: (family, tied) pairs every adaptation contract runs on
MODEL_CASES = [(f, tied) for f in CAUSAL_FAMILIES for tied in (True, False)]
TOKENIZER_KINDS = ("byte-bpe", "sp-unigram", "sp-bpe")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def tokenizer(kind: str, texts: list[str], vocab_size: int = 300):
    """A trained fast tokenizer of ``kind`` with the special tokens pad, bos, eos and unk (ids 0-3); ``sp-bpe`` has
    the 256 byte tokens on top of ``vocab_size``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "byte-bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
    elif kind == "sp-unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>",
                                          show_progress=False)
        tok.train_from_iterator(texts, trainer)
    elif kind == "sp-bpe":  # Llama-2 / Gemma layout: "▁" for spaces, no pre-tokenizer, <0xNN> byte fallback
        import json

        base = Tokenizer(models.BPE(unk_token="<unk>"))
        base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
        base.train_from_iterator(texts, trainer)
        model = json.loads(base.to_str())["model"]
        vocab = dict(model["vocab"])
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = base.normalizer
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        tok.add_special_tokens(SPECIALS)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r} ({', '.join(TOKENIZER_KINDS)})")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def model_for(family: str, tok, tied: bool = True, hidden: int = 32, layers: int = 2, seed: int = 0):
    """A tiny random ``family`` model sized for ``tok`` with its special-token ids."""
    return tiny_model(family, vocab_size=len(tok), hidden=hidden, layers=layers, heads=4, tied=tied, seed=seed,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
