"""Parameter-efficient cross-lingual rerankers (Litschko, Vulić, Glavaš, COLING 2022; ``seed-papers.md`` §4).

A monoBERT-style cross-encoder: ``[CLS] query [SEP] document [SEP]`` through a BERT encoder with MAD-X language
adapters (those of a :class:`xlt.tasks.colbert_xm.LanguageModularEncoder`), a linear head on the last hidden state
of [CLS] giving one relevance logit, trained point-wise with binary cross-entropy (:func:`pointwise_bce`). The
ranking skill is a **ranking adapter**: one bottleneck adapter per layer stacked after the language adapter
(``h ← h + A_lang(h)``, then ``h ← h + A_rank(h)``, after each layer's FFN), trained with the head over the frozen
encoder and the frozen English language adapter (:func:`train_ranking_adapter`); at test time the target language's
adapter is swapped in.

Cross-lingual modes for a query language Lq and a document language Ld (:data:`MODES`):

- ``qlang``: every token through Lq's adapter; ``dlang``: every token through Ld's;
- ``split``: a per-token language mask: the query segment (``[CLS] query [SEP]``) through Lq's adapter, the document
  segment through Ld's, in the same forward pass (``h + m ⊙ A_Lq(h) + (1 − m) ⊙ A_Ld(h)``);
- ``both``: the mean of the ``qlang`` and ``dlang`` logits. (The paper's ``both`` composes the two languages' sparse
  fine-tuning diffs, θ₀ + φ_Lq + φ_Ld + φ_rank; bottleneck adapters have no additive form, so the two passes'
  logits are averaged instead.)

:func:`rerank` rescores each query's first-stage candidates (e.g. the MaxSim top-100 of ColBERT-XM) and returns them
in the new order (ties keep the first-stage order); the candidate set never changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from xlt.errors import XltError
from xlt.options import option, positive
from xlt.tasks.colbert_xm import LanguageModularEncoder, language_code, shuffled_batches
from xlt.tasks.maxsim import rerank  # noqa: F401 (part of this module's API)
from xlt.tasks.registry import register_loss, register_module

PAPER = "Parameter-Efficient Neural Reranking for Cross-Lingual and Multilingual Retrieval (Litschko, Vulić, " \
        "Glavaš; COLING 2022; arXiv 2204.02292)"
CONFIG = "reranker.json"
WEIGHTS = "ranker.safetensors"
#: the cross-lingual modes: which language adapter each token goes through
MODES = ("qlang", "dlang", "split", "both")


# ------------------------------------------------------------------------------------------------------------------
# loss
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class PointwiseBCEOptions:
    pass


def _bce_example(g: torch.Generator):
    return (torch.randn(6, generator=g).requires_grad_(), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])), {}


@register_loss("pointwise_bce", description="point-wise binary cross-entropy of a cross-encoder's relevance logits "
               "against 0/1 labels (monoBERT; PEFT rerankers)", options=PointwiseBCEOptions, example=_bce_example,
               paper=PAPER)
def pointwise_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean_i −[y_i log σ(s_i) + (1 − y_i) log(1 − σ(s_i))] of logits ``s`` and labels ``y`` ∈ {0, 1}."""
    if logits.shape != labels.shape:
        raise XltError(f"{tuple(logits.shape)} logits but {tuple(labels.shape)} labels", "give one label per logit")
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


# ------------------------------------------------------------------------------------------------------------------
# the cross-encoder
# ------------------------------------------------------------------------------------------------------------------


def pair_batch(tok, queries: Sequence[str], docs: Sequence[str], query_length: int, max_length: int,
               token_types: bool = True):
    """``(ids, attention, token types, query mask)`` of ``[CLS] query [SEP] document [SEP]`` rows (the tokenizer's
    pair template): queries cut at ``query_length`` tokens (at a token boundary of the text), documents cut to fill
    ``max_length``; the query mask is True on the query segment (its special tokens included); token types 1 on the
    document segment when ``token_types`` (else all 0)."""
    if len(queries) != len(docs):
        raise XltError(f"{len(queries)} queries but {len(docs)} documents", "give one query per document")
    if query_length + tok.num_special_tokens_to_add(pair=True) >= max_length:
        raise XltError(f"query_length {query_length} leaves no room for the document in max_length "
                       f"{max_length}", "raise max_length or lower query_length")
    cut = tok(list(queries), add_special_tokens=False, truncation=True, max_length=query_length,
              return_offsets_mapping=True)["offset_mapping"]
    queries = [q[:off[-1][1]] if off else "" for q, off in zip(queries, cut)]
    rows = tok(queries, list(docs), truncation="only_second", max_length=max_length,
               return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    qlens = [len(r) for r in tok(queries, return_attention_mask=False, return_token_type_ids=False)["input_ids"]]
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros(len(rows), L, dtype=torch.long)
    pos = torch.arange(L)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row)
        att[r, :len(row)] = 1
    qmask = pos[None, :] < torch.tensor(qlens)[:, None]
    types = (~qmask & att.bool()).long() if token_types else torch.zeros_like(ids)
    return ids, att, types, qmask


@dataclass
class RerankerOptions:
    reduction: int = option(16, "ranking adapter bottleneck = hidden size / reduction (MAD-X task adapters: 16)",
                            check=positive)
    query_length: int = option(64, "queries are cut at this many tokens", check=positive)
    max_length: int = option(256, "query + document + special tokens are cut at this many tokens", check=positive)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise XltError(f"unknown cross-lingual mode {mode!r}", f"choose one of: {', '.join(MODES)}")


@register_module("cross_encoder_reranker", description="cross-encoder reranker (point-wise BCE) over a BERT encoder "
                 "with language adapters + a ranking adapter; CLIR modes qlang/dlang/split/both",
                 options=RerankerOptions, paper=PAPER, reranker_config=CONFIG)
class CrossEncoderReranker(nn.Module):
    """``CrossEncoderReranker(encoder)``: relevance logits of (query, document) pairs through ``encoder``'s BERT,
    its language adapters (Lq / Ld per :data:`MODES`), a ranking adapter per layer and a linear head on [CLS].

    The ranking adapter acts only inside this module's calls: the encoder used alone (MaxSim retrieval) is
    unchanged."""

    def __init__(self, encoder: LanguageModularEncoder, options: RerankerOptions | None = None, seed: int = 0):
        super().__init__()
        from xlt import arch
        from xlt.adapt.adapters import Bottleneck, output_hook

        if not isinstance(encoder, LanguageModularEncoder):
            raise XltError(f"the reranker needs a LanguageModularEncoder (its BERT and language adapters), not a "
                           f"{type(encoder).__name__}", "build one: LanguageModularEncoder(bert, tokenizer, langs) "
                           "or LanguageModularEncoder.from_pretrained_encoder('e5', langs)")
        self.options = options or RerankerOptions()
        self.encoder = encoder
        self.tokenizer = encoder.tokenizer
        d = encoder.bert.config.hidden_size
        layers = arch.layers(encoder)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.rank = nn.ModuleList(Bottleneck(d, max(1, d // self.options.reduction)) for _ in layers)
            self.head = nn.Linear(d, 1)
        self.train(encoder.training)  # the encoder's mode (an eval-mode encoder stays without dropout)
        self._route: tuple | None = None  # (query-token mask or None, adapter key for query tokens, for the others)

        def after_ffn(i):
            def add(h, x):
                if self._route is None:  # a call of the encoder alone
                    return h
                qmask, qkey, dkey = self._route
                if qmask is not None:  # split: the language adapter chosen per position
                    ad = encoder.adapters.adapters
                    h = h + torch.where(qmask, ad[qkey]["layers"][i](h), ad[dkey]["layers"][i](h))
                return h + self.rank[i](h)
            return output_hook(add)

        # registered after the encoder's AdapterStack hooks, so they run after the language adapter (MAD-X Stack)
        self._handles = [arch.ffn(layer, encoder).register_forward_hook(after_ffn(i), with_kwargs=True)
                         for i, layer in enumerate(layers)]

    # -- parameter groups --
    def ranking_parameters(self) -> list[nn.Parameter]:
        """What ranking training updates: the ranking adapter and the head."""
        return list(self.rank.parameters()) + list(self.head.parameters())

    def freeze_for_ranking(self) -> None:
        """Everything frozen but the ranking adapter and the head (base encoder and language adapters frozen)."""
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.ranking_parameters():
            p.requires_grad_(True)

    # -- languages --
    @staticmethod
    def check_mode(mode: str) -> None:
        """One error listing the CLIR modes when ``mode`` is not one of them."""
        _check_mode(mode)

    def check_languages(self, *langs: str) -> None:
        """One error naming the first language the reranker's encoder has no adapter for."""
        for lang in langs:
            self._code(lang)

    def _code(self, lang: str) -> str:
        code = language_code(lang)
        if code not in self.encoder.languages:
            raise XltError(f"the encoder has no adapter for language {lang!r} ({code}); it has adapters for: "
                           f"{', '.join(self.encoder.languages) or 'none'}",
                           f"train one first: `xlt retrieve adapter RUN --lang {lang}` "
                           "(Python: train_language_adapter(encoder, texts, lang))")
        return code

    # -- tokenisation --
    def tokenize(self, queries: Sequence[str], docs: Sequence[str]):
        """``(ids, attention, token types, query mask)`` of ``[CLS] query [SEP] document [SEP]`` rows
        (:func:`pair_batch`)."""
        return pair_batch(self.tokenizer, queries, docs, self.options.query_length, self.options.max_length,
                          self.encoder.bert.config.type_vocab_size > 1)

    # -- scoring --
    def _pass(self, ids, att, types, qmask, q_code: str, d_code: str | None) -> torch.Tensor:
        """One forward pass: every token through ``q_code``'s adapter (``d_code`` None, via the encoder's
        AdapterStack), or query tokens through ``q_code``'s and the others through ``d_code``'s (split)."""
        enc = self.encoder
        saved = enc.adapters.active
        if d_code is not None:
            enc.adapters.set_active(None)
            key = enc.adapters._key
            self._route = (qmask[..., None], key(f"lang/{q_code}"), key(f"lang/{d_code}"))
        else:
            enc.adapters.set_active(f"lang/{q_code}")
            self._route = (None, None, None)
        try:
            h = enc.bert(input_ids=ids, attention_mask=att, token_type_ids=types).last_hidden_state
        finally:
            self._route = None
            enc.adapters.set_active(saved)
        return self.head(h[:, 0]).squeeze(-1)

    def forward(self, input_ids, attention_mask, token_type_ids, query_mask, query_lang: str, doc_lang: str,
                mode: str = "qlang") -> torch.Tensor:
        """Relevance logits (batch,) of tokenised pairs (:meth:`tokenize`) under ``mode``."""
        _check_mode(mode)
        cq, cd = self._code(query_lang), self._code(doc_lang)
        args = (input_ids, attention_mask, token_type_ids, query_mask)
        if mode == "qlang":
            return self._pass(*args, cq, None)
        if mode == "dlang":
            return self._pass(*args, cd, None)
        if mode == "split":
            return self._pass(*args, cq, cd)
        return (self._pass(*args, cq, None) + self._pass(*args, cd, None)) / 2

    def plain_logits(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        """The head on the encoder without any adapter (language or ranking): the reference a zero-initialised
        reranker equals."""
        saved = self.encoder.adapters.active
        self.encoder.adapters.set_active(None)
        try:
            h = self.encoder.bert(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
        finally:
            self.encoder.adapters.set_active(saved)
        return self.head(h[:, 0]).squeeze(-1)

    @torch.no_grad()
    def score(self, queries: Sequence[str], docs: Sequence[str], query_lang: str, doc_lang: str | None = None,
              mode: str = "qlang", batch_size: int = 32) -> torch.Tensor:
        """Relevance logits (n,) of the pairs ``(queries[i], docs[i])``; ``doc_lang`` defaults to ``query_lang``."""
        _check_mode(mode)
        doc_lang = doc_lang or query_lang
        self._code(query_lang), self._code(doc_lang)
        was = self.training
        self.eval()
        out = []
        try:
            for a in range(0, len(queries), batch_size):
                t = self.tokenize(queries[a:a + batch_size], docs[a:a + batch_size])
                out.append(self(*t, query_lang, doc_lang, mode))
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.zeros(0)

    # -- save / load --
    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write ``encoder/`` (BERT and language adapters), the ranking adapter and head, and ``reranker.json``."""
        from safetensors.torch import save_file

        from xlt.util import atomic_dir, write_json_atomic

        with atomic_dir(folder, overwrite=overwrite) as tmp:
            self.encoder.save(tmp / "encoder")
            sd = {f"rank.{k}": v for k, v in self.rank.state_dict().items()}
            sd.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
            save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(tmp / WEIGHTS))
            write_json_atomic(tmp / CONFIG, {"format": "xlt-reranker/1", "options": dict(self.options.__dict__)})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "CrossEncoderReranker":
        from safetensors.torch import load_file

        from xlt.util import read_folder_config

        folder = Path(folder)
        cfg = read_folder_config(folder, CONFIG, "reranker", "give a folder written by CrossEncoderReranker.save")
        rr = cls(LanguageModularEncoder.load(folder / "encoder"), RerankerOptions(**cfg["options"]))
        sd = load_file(str(folder / WEIGHTS))
        rr.rank.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("rank.")})
        rr.head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
        for p in rr.parameters():
            p.requires_grad_(False)
        return rr.eval()


# ------------------------------------------------------------------------------------------------------------------
# training and reranking
# ------------------------------------------------------------------------------------------------------------------


def load_reranker(folder: str | Path):
    """The reranker saved in ``folder``, of whichever registered kind wrote it (each reranker module registers the
    config file its ``save`` writes, ``reranker_config``)."""
    from xlt.tasks.registry import MODULES

    folder = Path(folder)
    kinds = {e.extra["reranker_config"]: e.cls for e in (MODULES.get(n) for n in MODULES.names())
             if "reranker_config" in e.extra}
    for config, cls in sorted(kinds.items()):
        if (folder / config).is_file():
            return cls.load(folder)
    raise XltError(f"{folder} holds no reranker (none of {', '.join(sorted(kinds))})",
                   "give a folder written by a reranker's save (CrossEncoderReranker or SparseDeltaReranker)")


def pointwise_examples(triples: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, float]]:
    """(query, positive, negative) triples → point-wise (query, document, label) examples, 1 and 0."""
    return [ex for q, p, n in triples for ex in ((q, p, 1.0), (q, n, 0.0))]


def train_ranking_adapter(reranker: CrossEncoderReranker, examples: Sequence[tuple[str, str, float]], lang: str = "en",
                          steps: int = 100, batch_size: int = 16, lr: float = 1e-3, seed: int = 0, log=None) -> dict:
    """Train the ranking adapter and the head by :func:`pointwise_bce` on (query, document, label) ``examples`` in
    ``lang`` (both sides through ``lang``'s adapter); the encoder and every language adapter stay frozen."""
    if steps < 1 or batch_size < 1 or not examples:
        raise XltError(f"ranking training needs steps ≥ 1, batch_size ≥ 1 and examples (got {steps}, {batch_size}, "
                       f"{len(examples)} examples)", "give (query, document, label) examples and steps")
    bad = sorted({e[2] for e in examples} - {0, 1, 0.0, 1.0})
    if bad:
        raise XltError(f"labels must be 0 or 1, got {bad[:3]}", "label relevant pairs 1 and the others 0")
    reranker._code(lang)
    reranker.freeze_for_ranking()
    params = reranker.ranking_parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batches = shuffled_batches(examples, batch_size, seed)
    torch.manual_seed(seed)
    losses = []
    reranker.train()
    t0 = time.perf_counter()
    for step in range(steps):
        batch = next(batches)
        t = reranker.tokenize([b[0] for b in batch], [b[1] for b in batch])
        loss = pointwise_bce(reranker(*t, lang, lang, "qlang"), torch.tensor([float(b[2]) for b in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log:
            log(step, losses[-1])
    reranker.eval()
    for p in params:
        p.requires_grad_(False)
    return {"losses": losses, "seconds": time.perf_counter() - t0, "steps": steps, "batch_size": batch_size,
            "lr": lr, "language": language_code(lang), "trainable_parameters": sum(p.numel() for p in params)}


__all__ = ["MODES", "CrossEncoderReranker", "PointwiseBCEOptions", "RerankerOptions", "load_reranker", "pair_batch",
           "pointwise_bce", "pointwise_examples", "rerank", "train_ranking_adapter"]
