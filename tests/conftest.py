"""Shared fixtures: synthetic languages, a tiny byte-level BPE tokenizer and a tiny Llama saved as an HF folder.

Nothing here downloads anything; the text is generated from a seeded syllable grammar.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SYLLABLES = ["ka", "li", "mu", "na", "to", "we", "si", "ra", "po", "de", "ban", "kor", "tel", "mi", "zu", "ha"]


def pytest_collection_finish(session):
    """Move everything imported so far (torch, transformers, the model classes of every family) out of the garbage
    collector's sight: accelerate calls gc.collect() at each training-stage switch, which otherwise scans them all
    (0.2 s a call here, most of a tiny training run's time)."""
    import gc

    import peft  # noqa: F401
    import transformers as T

    for name in ("LlamaForCausalLM", "Gemma3ForCausalLM", "Qwen2ForCausalLM", "GPT2LMHeadModel", "MixtralForCausalLM",
                 "OlmoeForCausalLM", "BertForMaskedLM"):
        getattr(T, name)
    gc.collect()
    gc.freeze()


def make_language(seed: int, n_words: int = 120) -> list[str]:
    rng = random.Random(seed)
    words = set()
    while len(words) < n_words:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def sentences(seed: int, n: int, lexicon: list[str]) -> list[str]:
    """Zipf-ish sentences with a little bigram structure, so a tiny LM can learn something."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(lexicon))]
    out = []
    for _ in range(n):
        k = rng.randint(4, 12)
        w = rng.choices(lexicon, weights, k=1)
        for _ in range(k - 1):
            prev = lexicon.index(w[-1])
            w.append(lexicon[(prev * 7 + 3) % len(lexicon)] if rng.random() < 0.5 else rng.choices(lexicon, weights, k=1)[0])
        out.append(" ".join(w).capitalize() + ".")
    return out


@pytest.fixture(scope="session")
def source_lexicon() -> list[str]:
    return make_language(1)


@pytest.fixture(scope="session")
def target_lexicon() -> list[str]:
    return make_language(2)


@pytest.fixture(scope="session")
def source_texts(source_lexicon) -> list[str]:
    return sentences(10, 600, source_lexicon)


@pytest.fixture(scope="session")
def target_texts(target_lexicon) -> list[str]:
    return sentences(20, 600, target_lexicon)


def byte_bpe_tokenizer(texts: list[str], vocab_size: int = 400):
    """A byte-level BPE tokenizer (SmolLM2's family) with three special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")


@pytest.fixture(scope="session")
def source_tokenizer(source_texts):
    return byte_bpe_tokenizer(source_texts)


def train_tiny(model, tokenizer, texts, steps=60, seed=0):
    """A few AdamW steps on ``texts`` so embeddings carry real structure."""
    import torch

    torch.manual_seed(seed)
    ids = []
    for ids_ in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids += [tokenizer.eos_token_id] + ids_
    data = torch.tensor(ids[: (len(ids) // 64) * 64]).view(-1, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (16,), generator=g)]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_source_dir(tmp_path_factory, source_tokenizer, source_texts) -> Path:
    """A tiny Llama (2 layers, d=64, tied) trained briefly on the source language, saved with its tokenizer."""
    from xlt.models import tiny_model

    tok = source_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), hidden=64, layers=2, tied=True, seed=0,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    train_tiny(model, tok, source_texts)
    path = tmp_path_factory.mktemp("tiny_source")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def parallel_jsonl(tmp_path_factory, source_texts, target_texts) -> Path:
    """A JSONL corpus in two languages ('en' and 'sw' labels on synthetic text), parallel by id."""
    path = tmp_path_factory.mktemp("corpus") / "parallel.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, (s, t) in enumerate(zip(source_texts, target_texts)):
            fh.write(json.dumps({"id": i, "lang": "en", "text": s}) + "\n")
            fh.write(json.dumps({"id": i, "lang": "sw", "text": t}) + "\n")
    return path


def has_package(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="session")
def tiny_adapt_run(tmp_path_factory, tiny_source_dir, parallel_jsonl) -> Path:
    """A finished ``xlt adapt`` run of the tiny source with one init and a whole-model and a LoRA method
    (``overlap/`` and ``overlap+lora/``), shared by the model-card and artefact-path tests."""
    from xlt.adapt import run

    out = tmp_path_factory.mktemp("card_runs") / "sw"
    run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, target="sw", init="overlap",
        method="full,lora", steps=4, stage1_steps=2, vocab_size=350, batch_size=4, seq_len=32, eval_every=2,
        eval_max_bytes=2000, samples=1, loo_tokens=20, show_progress=False)
    return out
