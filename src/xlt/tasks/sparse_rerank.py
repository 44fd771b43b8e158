"""Sparse-delta cross-lingual rerankers: the SFTM variant of Litschko, Vulić, Glavaš (COLING 2022; ``seed-papers.md``
§4), composed from LT-SFT sparse deltas over a BERT encoder.

Each language has a **language delta** φ_L (:func:`train_language_sft`: LT-SFT by masked LM over the language's text,
softmax over its tokens, output layer tied to the word embeddings); the ranking skill is a **ranking delta** φ_rank
(:func:`train_ranking_sft`: LT-SFT of point-wise BCE on English pairs, trained **on top of θ₀ + φ_en**, with a dense
head on [CLS]). At test time the deltas are added on the union of their indices
(:func:`xlt.adapt.methods.sparse.compose`) and applied to θ₀ for the pass:

- ``qlang``: θ₀ + φ_Lq + φ_rank; ``dlang``: θ₀ + φ_Ld + φ_rank;
- ``both``: θ₀ + φ_Lq + φ_Ld + φ_rank (the paper's composition of both languages; one pass);
- ``split`` has no sparse form (a delta changes the weights of the whole pass, not of some tokens): refused, with
  the modes that exist.

The encoder's weights are restored bit for bit after every pass (:meth:`SparseDelta.apply` keeps the values it
replaced). A language trained without a delta (:meth:`SparseDeltaReranker.add_language` with ``None``) composes as
the empty delta (θ₀ itself). :func:`~xlt.tasks.maxsim.rerank` reorders first-stage candidates with it like with the
adapter reranker; ``xlt retrieve eval --rerank FOLDER`` loads either kind (:func:`xlt.tasks.rerank.load_reranker`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from xlt.adapt.methods.sparse import SparseDelta, _named_body, compose, lt_sft
from xlt.errors import XltError
from xlt.options import option, positive
from xlt.tasks.colbert_xm import language_code, mlm_loss_at, shuffled_batches
from xlt.tasks.registry import register_module
from xlt.tasks.rerank import PAPER, pair_batch, pointwise_bce

CONFIG = "sparse_reranker.json"
HEAD = "head.safetensors"
#: the modes a sparse reranker has (``split`` needs a per-token choice, which a weight delta cannot make)
SPARSE_MODES = ("qlang", "dlang", "both")


@dataclass
class SparseRerankerOptions:
    query_length: int = option(64, "queries are cut at this many tokens", check=positive)
    max_length: int = option(256, "query + document + special tokens are cut at this many tokens", check=positive)


def _check_mode(mode: str) -> None:
    if mode == "split":
        raise XltError("mode 'split' needs a per-token language choice, which a sparse delta (a change of the "
                       "weights of the whole pass) cannot make", f"choose one of: {', '.join(SPARSE_MODES)} "
                                                                   "(or an adapter reranker for split)")
    if mode not in SPARSE_MODES:
        raise XltError(f"unknown cross-lingual mode {mode!r}", f"choose one of: {', '.join(SPARSE_MODES)}")


def _body_fingerprint(bert) -> str:
    from xlt.adapt.methods.base import fingerprint

    return fingerprint(bert)


@register_module("sparse_delta_reranker", description="cross-encoder reranker (point-wise BCE) as composed LT-SFT "
                 "sparse deltas: θ₀ + φ_lang + φ_rank over a BERT encoder; modes qlang/dlang/both",
                 options=SparseRerankerOptions, paper=PAPER, reranker_config=CONFIG)
class SparseDeltaReranker(nn.Module):
    """``SparseDeltaReranker(bert, tokenizer)``: relevance logits of (query, document) pairs through ``bert`` with
    the composed sparse deltas of the mode's languages and the ranking delta, then a linear head on [CLS]."""

    def __init__(self, bert, tokenizer, options: SparseRerankerOptions | None = None, seed: int = 0):
        super().__init__()
        if not hasattr(bert, "encoder") or not hasattr(bert.config, "type_vocab_size"):
            raise XltError(f"the sparse reranker needs a BERT-style encoder (BertModel), not a {type(bert).__name__}",
                           "load one with transformers.AutoModel (e.g. `xlt models prepare e5`)")
        self.options = options or SparseRerankerOptions()
        self.bert, self.tokenizer = bert, tokenizer
        bert.requires_grad_(False)  # θ₀ is fixed: training learns deltas (LT-SFT), never the encoder in place
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(bert.config.hidden_size, 1)
        self.language_deltas: dict[str, SparseDelta] = {}
        self.rank_delta: SparseDelta | None = None
        self.base_fingerprint = _body_fingerprint(bert)
        self._composed: dict[tuple, SparseDelta] = {}

    @classmethod
    def from_pretrained_encoder(cls, model: str = "e5", options: SparseRerankerOptions | None = None,
                                seed: int = 0) -> "SparseDeltaReranker":
        """A new sparse reranker (no deltas yet) on a prepared encoder (``"e5"``) or a local ``BertModel`` folder."""
        from xlt.infer.embed import _load_encoder

        bert, tok, _ = _load_encoder(model, "cpu")
        return cls(bert.eval(), tok, options, seed)

    # -- languages and deltas --
    @property
    def languages(self) -> list[str]:
        return sorted(self.language_deltas)

    def add_language(self, lang: str, delta: SparseDelta | None = None) -> str:
        """Give ``lang`` its language delta (``None``: the empty delta, θ₀ itself)."""
        code = language_code(lang)
        delta = delta if delta is not None else SparseDelta({}, {}, {}, self.base_fingerprint)
        self._check_base(delta, f"the {code} delta")
        self.language_deltas[code] = delta
        self._composed.clear()
        return code

    def set_rank_delta(self, delta: SparseDelta) -> None:
        self._check_base(delta, "the ranking delta")
        self.rank_delta = delta
        self._composed.clear()

    def _check_base(self, delta: SparseDelta, what: str) -> None:
        if delta.base_fingerprint and delta.base_fingerprint != self.base_fingerprint:
            raise XltError(f"{what} was trained on another encoder than this reranker's",
                           "use deltas trained on the same base encoder")

    @staticmethod
    def check_mode(mode: str) -> None:
        _check_mode(mode)

    def check_languages(self, *langs: str) -> None:
        for lang in langs:
            self._code(lang)

    def _code(self, lang: str) -> str:
        code = language_code(lang)
        if code not in self.language_deltas:
            raise XltError(f"the sparse reranker has no language delta for {lang!r} ({code}); it has: "
                           f"{', '.join(self.languages) or 'none'}",
                           f"train one: train_language_sft(reranker, texts, {lang!r})")
        return code

    def composition(self, query_lang: str, doc_lang: str, mode: str = "qlang") -> SparseDelta:
        """The one delta a pass applies: the mode's language deltas + the ranking delta (summed on the union of
        their indices)."""
        _check_mode(mode)
        cq, cd = self._code(query_lang), self._code(doc_lang)
        langs = {"qlang": (cq,), "dlang": (cd,), "both": tuple(sorted({cq, cd}))}[mode]
        key = (langs, id(self.rank_delta))
        if key not in self._composed:
            parts = [self.language_deltas[c] for c in langs] + ([self.rank_delta] if self.rank_delta else [])
            self._composed[key] = compose(parts)
        return self._composed[key]

    @contextmanager
    def applied(self, delta: SparseDelta):
        """``bert`` with ``delta`` added inside the block, restored bit for bit after it."""
        saved = delta.apply(self.bert)
        try:
            yield self.bert
        finally:
            delta.revert(self.bert, saved)

    # -- scoring --
    def tokenize(self, queries: Sequence[str], docs: Sequence[str]):
        """``(ids, attention, token types, query mask)`` of ``[CLS] query [SEP] document [SEP]`` rows."""
        return pair_batch(self.tokenizer, queries, docs, self.options.query_length, self.options.max_length,
                          self.bert.config.type_vocab_size > 1)

    def logits(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        """The head on [CLS] of ``bert`` as it is now (apply a composition around it)."""
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(h.last_hidden_state[:, 0]).squeeze(-1)

    def forward(self, input_ids, attention_mask, token_type_ids, query_mask, query_lang: str, doc_lang: str,
                mode: str = "qlang") -> torch.Tensor:
        """Relevance logits (batch,) of tokenised pairs under ``mode`` (``query_mask`` is unused: no split)."""
        with self.applied(self.composition(query_lang, doc_lang, mode)):
            return self.logits(input_ids, attention_mask, token_type_ids)

    @torch.no_grad()
    def score(self, queries: Sequence[str], docs: Sequence[str], query_lang: str, doc_lang: str | None = None,
              mode: str = "qlang", batch_size: int = 32) -> torch.Tensor:
        """Relevance logits (n,) of the pairs ``(queries[i], docs[i])``; the composition is applied once."""
        doc_lang = doc_lang or query_lang
        delta = self.composition(query_lang, doc_lang, mode)
        was = self.training
        self.eval()
        out = []
        try:
            with self.applied(delta):
                for a in range(0, len(queries), batch_size):
                    out.append(self.logits(*self.tokenize(queries[a:a + batch_size], docs[a:a + batch_size])[:3]))
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.zeros(0)

    # -- save / load --
    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write ``encoder/`` (θ₀ and its tokenizer), ``lang-<code>.safetensors`` per language delta,
        ``rank.safetensors``, the head and ``sparse_reranker.json``."""
        from safetensors.torch import save_file

        from xlt.util import atomic_dir, write_json_atomic

        with atomic_dir(folder, overwrite=overwrite) as tmp:
            self.bert.save_pretrained(tmp / "encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / "encoder")
            for code, d in self.language_deltas.items():
                d.base_fingerprint = d.base_fingerprint or self.base_fingerprint
                d.save(tmp / f"lang-{code}.safetensors")
            if self.rank_delta is not None:
                self.rank_delta.save(tmp / "rank.safetensors")
            save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(tmp / HEAD))
            write_json_atomic(tmp / CONFIG, {"format": "xlt-sparse-reranker/1", "options": dict(self.options.__dict__),
                                             "languages": self.languages, "rank": self.rank_delta is not None,
                                             "base_fingerprint": self.base_fingerprint,
                                             "pooler": getattr(self.bert, "pooler", None) is not None})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "SparseDeltaReranker":
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        from xlt.util import read_folder_config

        folder = Path(folder)
        cfg = read_folder_config(folder, CONFIG, "sparse reranker", "give a folder written by SparseDeltaReranker.save")
        bert = AutoModel.from_pretrained(folder / "encoder", add_pooling_layer=cfg.get("pooler", False),
                                         use_safetensors=True)
        rr = cls(bert.eval(), AutoTokenizer.from_pretrained(folder / "encoder"), SparseRerankerOptions(**cfg["options"]))
        if rr.base_fingerprint != cfg["base_fingerprint"]:
            raise XltError(f"{folder}/encoder does not hold the weights the deltas were trained on",
                           "save the reranker again; do not edit its encoder folder")
        for code in cfg["languages"]:
            rr.add_language(code, SparseDelta.load(folder / f"lang-{code}.safetensors"))
        if cfg["rank"]:
            rr.set_rank_delta(SparseDelta.load(folder / "rank.safetensors"))
        rr.head.load_state_dict(load_file(str(folder / HEAD)))
        for p in rr.parameters():
            p.requires_grad_(False)
        return rr.eval()


# ------------------------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------------------------


def _k(bert, k: int | None, density: float | None) -> int:
    n = sum(p.numel() for p in _named_body(bert).values())
    if k is None:
        if density is None or not 0 < density <= 1:
            raise XltError(f"density {density} is not in (0, 1]", "give k (entries) or a density, e.g. 0.01")
        k = max(1, int(round(density * n)))
    if not 0 < k <= n:
        raise XltError(f"k = {k} but the encoder's body has {n:,} entries", f"choose k between 1 and {n:,}")
    return k


def train_language_sft(reranker: SparseDeltaReranker, texts: Sequence[str], lang: str, k: int | None = None,
                       density: float | None = 0.01, full_steps: int = 50, sparse_steps: int = 50,
                       batch_size: int = 16, lr: float = 1e-4, mask_prob: float = 0.15, max_length: int = 128,
                       seed: int = 0, log=None) -> dict:
    """``lang``'s language delta by LT-SFT of masked LM on ``texts`` (softmax over the token ids seen in them, output
    layer tied to the word embeddings; the embeddings stay frozen, as in xlt's ``sft``); added to ``reranker``."""
    if not texts:
        raise XltError(f"no {lang} text to train a language delta on", "give the language's texts")
    bert, tok = reranker.bert, reranker.tokenizer
    ids = tok(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    vocab = torch.tensor(sorted({i for row in ids for i in row} - set(tok.all_special_ids)), dtype=torch.long)
    if not len(vocab):
        raise XltError(f"the {lang} texts give no tokens", "give non-empty texts in the language")
    loss_at = mlm_loss_at(bert, tok, texts, vocab, batch_size, mask_prob, max_length, seed)
    bert.train()
    try:
        delta, rec = lt_sft(_named_body(bert), loss_at, _k(bert, k, density), full_steps, sparse_steps, lr, log=log)
    finally:
        bert.eval()
    delta.base_fingerprint = reranker.base_fingerprint
    code = reranker.add_language(lang, delta)
    return {**rec, "language": code, "vocabulary": len(vocab), "batch_size": batch_size}


def train_ranking_sft(reranker: SparseDeltaReranker, examples: Sequence[tuple[str, str, float]], lang: str = "en",
                      k: int | None = None, density: float | None = 0.01, full_steps: int = 50,
                      sparse_steps: int = 50, batch_size: int = 16, lr: float = 3e-5, head_lr: float = 1e-3,
                      seed: int = 0, log=None) -> dict:
    """The ranking delta by LT-SFT of :func:`pointwise_bce` on (query, document, label) ``examples`` in ``lang``,
    trained on top of θ₀ + φ_lang (the language delta applied and frozen); the head trains densely in both phases
    (rewound with the body; learning rate ``head_lr``). Sets ``reranker``'s ranking delta and head."""
    if not examples or batch_size < 1:
        raise XltError(f"ranking training needs examples and batch_size ≥ 1 (got {len(examples)}, {batch_size})",
                       "give (query, document, label) examples")
    bad = sorted({e[2] for e in examples} - {0, 1, 0.0, 1.0})
    if bad:
        raise XltError(f"labels must be 0 or 1, got {bad[:3]}", "label relevant pairs 1 and the others 0")
    code = reranker._code(lang)
    batches = shuffled_batches(examples, batch_size, seed)
    torch.manual_seed(seed)

    def loss_at(step: int) -> torch.Tensor:
        batch = next(batches)
        ids, att, types, _ = reranker.tokenize([b[0] for b in batch], [b[1] for b in batch])
        return pointwise_bce(reranker.logits(ids, att, types), torch.tensor([float(b[2]) for b in batch]))

    reranker.train()
    try:
        with reranker.applied(reranker.language_deltas[code]):  # θ₀ + φ_lang is the starting point of φ_rank
            delta, rec = lt_sft(_named_body(reranker.bert), loss_at, _k(reranker.bert, k, density), full_steps,
                                sparse_steps, lr, dense=list(reranker.head.parameters()), dense_lr=head_lr, log=log)
    finally:
        reranker.eval()
    delta.base_fingerprint = reranker.base_fingerprint
    reranker.set_rank_delta(delta)
    return {**rec, "language": code, "batch_size": batch_size}


# ------------------------------------------------------------------------------------------------------------------
# `xlt retrieve rerank`: train either reranker kind on the Bible
# ------------------------------------------------------------------------------------------------------------------

#: the reranker kinds `xlt retrieve rerank` trains
KINDS = ("adapter", "sparse")


def _run_base(run: Path, seed: int) -> SparseDeltaReranker:
    """A sparse reranker on the BERT of a `xlt retrieve train` run (without its language adapters)."""
    from transformers import BertModel

    from xlt.models.hf import quiet_transformers
    from xlt.models.loading import load_tokenizer
    from xlt.tasks.colbert_xm import CONFIG as XM_CONFIG

    from xlt.util import read_folder_config

    folder = run / "encoder"
    cfg = read_folder_config(folder, XM_CONFIG, "ColBERT-XM encoder", "give a run folder written by `xlt retrieve "
                                                                     "train`")
    quiet_transformers()
    bert = BertModel.from_pretrained(str(folder / "bert"), dtype=torch.float32, use_safetensors=True,
                                     add_pooling_layer=bool(cfg.get("pooler", False)))
    return SparseDeltaReranker(bert.eval(), load_tokenizer(folder / "bert"), seed=seed)


def run_rerank(run: str | Path, out: str | Path, kind: str = "adapter", langs: Sequence[str] = ("en",),
               steps: int = 200, batch_size: int = 8, lr: float | None = None, n_triples: int | None = 2000,
               density: float = 0.01, lang_steps: int = 100, seed: int = 0, overwrite: bool = False,
               log=None) -> dict:
    """``xlt retrieve rerank``: a cross-encoder reranker trained point-wise (BCE) on the Bible's BBE → KJV train-book
    pairs (positive: the same verse; negative: a neighbouring verse of the chapter), written to ``out`` (a folder
    ``xlt retrieve eval --rerank`` loads) with ``metrics.json`` and ``report.html``.

    ``kind="adapter"``: over ``run``'s encoder and its language adapters, a ranking adapter + head trained with the
    English adapter (``steps`` steps, lr default 1e-3). ``kind="sparse"``: over the same base BERT, a language delta
    per language of ``langs`` (LT-SFT of masked LM on its Bible train split, ``lang_steps`` full + as many sparse
    steps, ``density`` of the body), then the ranking delta on top of θ₀ + φ_en (``steps`` split evenly between the
    two phases, lr default 3e-5, head 1e-3)."""
    import html

    from xlt.corpora import open_corpus
    from xlt.signature import Signature
    from xlt.tasks.colbert_xm import LanguageModularEncoder, _loss_parts, _report, bible_triples
    from xlt.tasks.rerank import CrossEncoderReranker, pointwise_examples, train_ranking_adapter
    from xlt.util import atomic_dir, write_json_atomic

    run, out = Path(run), Path(out)
    if kind not in KINDS:
        raise XltError(f"unknown reranker kind {kind!r}", f"choose one of: {', '.join(KINDS)}")
    if out.exists() and not overwrite:
        raise XltError(f"{out} exists", "choose another --out or pass --overwrite")
    if steps < (2 if kind == "sparse" else 1):
        raise XltError(f"{steps} ranking steps", "give at least 1 step (2 for the sparse kind: a full and a sparse "
                                                 "phase)")
    codes = sorted({language_code(lang) for lang in langs} | {"eng"})
    examples = pointwise_examples(bible_triples(n_triples, seed))
    lang_runs = []
    if kind == "adapter":
        enc = LanguageModularEncoder.load(run / "encoder")
        base = enc.fingerprint()
        missing = [c for c in codes if c not in enc.languages]
        if missing:
            raise XltError(f"the run's encoder has no adapter for {', '.join(missing)}; it has: "
                           f"{', '.join(enc.languages)}", f"train one first: `xlt retrieve adapter {run} --lang "
                                                          f"{missing[0]}`")
        rr = CrossEncoderReranker(enc.eval(), seed=seed)
        res = train_ranking_adapter(rr, examples, "en", steps, batch_size, lr or 1e-3, seed=seed, log=log)
        losses, what = res["losses"], "ranking adapter + head"
    else:
        rr = _run_base(run, seed)
        base = rr.base_fingerprint
        bible = open_corpus("bible")
        for code in codes:
            texts = bible.texts(code, "train")
            if not texts:
                raise XltError(f"the Bible has no {code} training text", "choose languages the corpus has")
            lang_runs.append(train_language_sft(rr, texts, code, density=density, full_steps=lang_steps,
                                                sparse_steps=lang_steps, seed=seed))
        half = steps // 2
        res = train_ranking_sft(rr, examples, "en", density=density, full_steps=steps - half, sparse_steps=half,
                                batch_size=batch_size, lr=lr or 3e-5, seed=seed, log=log)
        losses, what = res["losses_full"] + res["losses_sparse"], "ranking delta (full phase, then sparse phase)"
    metrics = {"settings": {"run": run.name, "kind": kind, "languages": codes, "steps": steps,
                            "batch_size": batch_size, "lr": lr, "triples": len(examples) // 2, "seed": seed,
                            **({"density": density, "lang_steps": lang_steps} if kind == "sparse" else {})},
               "training": {k: v for k, v in res.items() if not k.startswith("losses")} | {"losses": losses},
               "language_deltas": [{k: v for k, v in r.items() if not k.startswith("losses")} for r in lang_runs],
               "definition": "point-wise BCE of a cross-encoder's [CLS] logit on BBE → KJV train-book pairs "
                             "(positive: the same verse, negative: a neighbouring verse of the chapter); "
                             + ("ranking adapter after each layer's language adapter" if kind == "adapter" else
                                "LT-SFT sparse deltas composed as θ₀ + φ_lang + φ_rank")}
    metrics["signature"] = str(Signature(f"rerank-{kind}", steps=steps, bs=batch_size, seed=seed, model=base[:12]))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        rr.save(tmp, overwrite=True)
        write_json_atomic(tmp / "metrics.json", metrics)
        _report(tmp, f"xlt retrieve rerank ({kind})", [
            f"<p>{html.escape(metrics['definition'])}. {len(examples) // 2} triples, {steps} steps of {batch_size} "
            f"pairs; languages {', '.join(codes)}; {res['seconds']:.0f} s.</p>", f"<h2>BCE, {what}</h2>",
            *_loss_parts(losses, "BCE")], metrics)
    return metrics


__all__ = ["KINDS", "SPARSE_MODES", "SparseDeltaReranker", "SparseRerankerOptions", "run_rerank",
           "train_language_sft", "train_ranking_sft"]
