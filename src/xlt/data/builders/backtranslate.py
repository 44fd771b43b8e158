"""Back-translation (Her & Kruschwitz 2024, Bavarian NMT; Sennrich et al.'s recipe): monolingual target-language
text is translated into the source language by a reverse model, the synthetic ("silver") pairs are filtered and
mixed with real parallel pairs.

- **Reverse model**: a causal LM (a packaged name such as ``smollm2``, an HF folder, or an ``xlt adapt`` method
  folder) prompted few-shot: ``shots`` demonstrations from the parallel ``demo_split``, each
  ``"{Mono}: {text}\\n{Src}: {translation}\\n\\n"``, then ``"{Mono}: {text}\\n{Src}:"``; greedy decoding by
  :func:`xlt.infer.decode.generate_pool`, cut at the first newline.
- **Filters** (``filter``, comma-separated, applied in this order, each counted in the manifest):
  ``len[=R]`` drops a pair whose character-length ratio (longer / shorter) exceeds R (default 2.0);
  ``lid`` drops a translation py3langid does not label as the source language; ``cos[=T]`` drops a pair whose
  multilingual-e5-small cosine is below T (default 0.85; the paper's misalignment filter; e5's cosines sit high:
  on the Bible, real English–Swahili verse pairs score 0.88–0.94 and SmolLM2-135M's failed translations 0.75–0.84); ``dedup`` drops a
  translation seen before (after lower-casing and whitespace normalisation); empty translations are always dropped.
- **Mix** ``S:R``: for every S kept synthetic pairs, R real pairs from the parallel corpus (keys not used as
  monolingual text or demonstrations), so ``1:1`` doubles the data with real pairs.

Records: ``src_text`` (the source-language side: synthetic for ``origin: synthetic``), ``tgt_text`` (the real
target-language text), ``direction`` and ``generator`` settings; with ``write_dropped`` the dropped pairs are
written too, with ``dropped_by`` naming the filter (for inspection; not training data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from xlt.data.registry import register_builder
from xlt.errors import XltError
from xlt.options import non_negative, option, positive


@dataclass(frozen=True)
class FilterSpec:
    name: str
    value: float | None


_FILTERS = {"len": 2.0, "lid": None, "cos": 0.85, "dedup": None}


def parse_filters(spec: str) -> list[FilterSpec]:
    """``"len,lid,cos=0.7"`` -> filters with their thresholds (defaults: len 2.0, cos 0.85)."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, sep, val = item.partition("=")
        if name not in _FILTERS:
            raise XltError(f"unknown back-translation filter {name!r}", f"use any of {', '.join(_FILTERS)} "
                           "(len=R: max length ratio, lid, cos=T: min e5 cosine, dedup)")
        if sep and _FILTERS[name] is None:
            raise XltError(f"filter {name} takes no value", f"write {name} alone")
        try:
            value = float(val) if sep else _FILTERS[name]
        except ValueError:
            raise XltError(f"filter {item!r} has no number after '='", f"e.g. {name}={_FILTERS[name]}") from None
        out.append(FilterSpec(name, value))
    return out


def parse_mix(spec: str) -> tuple[int, int]:
    a, sep, b = spec.partition(":")
    if not sep or not a.isdigit() or not b.isdigit() or int(a) < 1:
        raise XltError(f"cannot read --mix {spec!r}", "write SYNTHETIC:REAL, e.g. 1:1 (or 1:0 for synthetic only)")
    return int(a), int(b)


def length_ratio(a: str, b: str) -> float:
    la, lb = len(a), len(b)
    return max(la, lb) / max(1, min(la, lb))


def few_shot_prompt(demos: list[tuple[str, str]], text: str, mono_name: str, src_name: str) -> str:
    shots = "".join(f"{mono_name}: {m}\n{src_name}: {s}\n\n" for m, s in demos)
    return f"{shots}{mono_name}: {text}\n{src_name}:"


def first_line(text: str) -> str:
    return " ".join(text.strip().split("\n", 1)[0].split())


@dataclass
class BacktranslateOptions:
    model: str = option(help="the reverse model (mono -> src): a packaged name, an HF folder or an xlt adapt method folder")
    corpus: str = option("bible", "corpus with the monolingual text (and parallel text for demos and mixing)")
    mono: str = option("swh", "language of the monolingual text (the target side)")
    src: str = option("eng", "language it is translated into (the synthetic source side)")
    split: str = option("train", "split the monolingual text comes from")
    n: int | None = option(2000, "monolingual documents to translate (None: all)", check=positive)
    shots: int = option(3, "few-shot demonstrations in each prompt (from the parallel text)", check=non_negative)
    filter: str = option("len,lid,cos,dedup", "filters: len[=R], lid, cos[=T], dedup (comma-separated)")
    mix: str = option("1:1", "synthetic:real pairs in the output (real pairs from the corpus's other keys)")
    max_new_tokens: int = option(96, "tokens generated per translation at most", check=positive)
    batch_size: int = option(16, "prompts per forward pass", check=positive)
    e5: str = option("e5", "the sentence encoder for cos (a packaged name or a BertModel folder)")
    write_dropped: bool = option(False, "also write dropped pairs, with dropped_by (for inspection)")


@register_builder("backtranslate")
class Backtranslate:
    description = "back-translation: a reverse LM translates monolingual text few-shot; len/lid/cos/dedup filters; mixed with real pairs"
    options = BacktranslateOptions
    seeded = True  # demonstrations and real pairs are drawn with the seed

    def records(self, ctx, o: BacktranslateOptions) -> Iterator[dict]:
        from xlt.corpora import open_corpus

        filters = parse_filters(o.filter)
        n_syn, n_real = parse_mix(o.mix)
        corpus = open_corpus(o.corpus)
        mono, src = corpus.language(o.mono), corpus.language(o.src)
        if mono == src:
            raise XltError(f"--mono and --src are the same language ({mono.code})", "give two different languages")
        if any(f.name == "lid" for f in filters):
            from xlt.eval.offtarget import py3langid_label

            py3langid_label(src)  # refuses a language py3langid cannot identify, before any work
        parallel = corpus.parallel(mono, src, "train")  # demos and real pairs: always the train split
        mono_docs = [d for d in corpus.documents(mono, o.split)][: o.n]
        if not mono_docs:
            raise XltError(f"the {o.split} split of {corpus.name} has no {mono.name} text", "choose another --split")
        used = {d.key for d in mono_docs}
        pool = [p for p in parallel if p[0] not in used]
        rng = ctx.rng("demos")
        order = rng.permutation(len(pool))
        demos = [(pool[i][1], pool[i][2]) for i in order[: o.shots]]
        real = [pool[i] for i in order[o.shots:]]
        if o.shots and len(demos) < o.shots:
            raise XltError(f"only {len(demos)} parallel {mono.code}-{src.code} pairs outside the monolingual text, "
                           f"{o.shots} demonstrations asked", "lower --shots or --n")
        from xlt.infer.run import load_generator

        model, tok, name = load_generator(o.model)
        embed = _embedder(o.e5) if any(f.name == "cos" for f in filters) else None
        gen = {"model": name, "shots": o.shots, "decoding": "greedy", "max_new_tokens": o.max_new_tokens,
               "prompt": few_shot_prompt([], "{text}", mono.name, src.name)}
        seen: set[str] = set()
        kept = 0
        real_i = 0
        for chunk in ctx.chunks(mono_docs):
            prompts = [few_shot_prompt(demos, d.text, mono.name, src.name) for d in chunk]
            outs = _translate(model, tok, prompts, o, ctx.seed)
            cos = _cosines(embed, [d.text for d in chunk], outs) if embed is not None else [None] * len(chunk)
            for doc, hyp, c in zip(chunk, outs, cos):
                why = self._judge(ctx, filters, doc.text, hyp, src, seen, c)
                rec = {"key": doc.key, "langs": [src.code, mono.code], "origin": "synthetic", "src_text": hyp,
                       "tgt_text": doc.text, "direction": f"{src.code}-{mono.code}", "generator": gen}
                if why is None:
                    kept += 1
                    yield rec
                    while real_i < len(real) and real_i * n_syn < kept * n_real:
                        key, m, s = real[real_i]
                        real_i += 1
                        yield {"key": key, "langs": [src.code, mono.code], "origin": "real", "src_text": s,
                               "tgt_text": m, "direction": f"{src.code}-{mono.code}"}
                elif o.write_dropped:
                    yield {**rec, "dropped_by": why}
        ctx.extra["mix"] = {"synthetic": kept, "real": real_i, "ratio": o.mix,
                            "real_available": len(real)}

    def _judge(self, ctx, filters, mono_text: str, hyp: str, src, seen: set, cos: float | None) -> str | None:
        """The first filter that drops the pair (each decision counted), or None when it is kept."""
        if not ctx.keep("empty", bool(hyp.strip())):
            return "empty"
        for f in filters:
            if f.name == "len":
                ok = length_ratio(mono_text, hyp) <= f.value
            elif f.name == "lid":
                from xlt.eval.offtarget import off_target_rate

                ok = off_target_rate([hyp], src.code).off_target == 0
            elif f.name == "cos":
                ok = cos >= f.value
            else:
                norm = " ".join(hyp.lower().split())
                ok = norm not in seen
                seen.add(norm)
            if not ctx.keep(f.name, ok):
                return f.name
        return None

    def example(self, workdir: Path) -> dict:
        from xlt.data.toy import toy_parallel
        from xlt.models import tiny_model

        corpus = workdir / "toy.jsonl"
        toy_parallel(corpus, ("eng", "swh"), n=12)
        folder = workdir / "reverse"
        if not folder.exists():
            tok = _toy_tokenizer(corpus)
            model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, seed=0,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
        return {"model": str(folder), "corpus": f"jsonl:{corpus}", "n": 6, "shots": 1, "filter": "len=100,dedup",
                "mix": "1:1", "max_new_tokens": 6, "batch_size": 4}


def _toy_tokenizer(corpus: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus.read_text(encoding="utf-8").splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")


def _embedder(spec: str):
    from xlt.infer.embed import E5Embedder

    return E5Embedder(spec)


def _cosines(embed, a: list[str], b: list[str]) -> list[float]:
    """Cosine of each pair (one batched call for the chunk; empty texts score 0)."""
    import numpy as np

    ea, eb = embed(a), embed([t or " " for t in b])
    return [float(x) if t.strip() else 0.0 for x, t in zip(np.sum(ea * eb, axis=1), b)]


def _translate(model, tok, prompts: list[str], o: BacktranslateOptions, seed: int) -> list[str]:
    from xlt.infer.decode import generate_pool
    from xlt.infer.pool import parse_pool

    newline = tok("\n", add_special_tokens=False)["input_ids"]
    eos = [t for t in (tok.eos_token_id,) if t is not None] + (newline if len(newline) == 1 else [])
    prefix = shared_prefix(prompts)
    cands = generate_pool(model, tok, [p[len(prefix):] for p in prompts] if prefix else prompts, parse_pool("greedy"),
                          max_new_tokens=o.max_new_tokens, batch_size=o.batch_size, seed=seed, eos_token_ids=eos,
                          prefix=prefix or None)
    return [first_line(c[0].text) for c in cands]


def shared_prefix(prompts: list[str]) -> str:
    """The demonstrations every prompt starts with (up to the last blank line they share; "" without one): run
    once and shared by every prompt's decoding. The same for any chunk of prompts built from the same demos."""
    import os

    common = os.path.commonprefix(prompts) if prompts else ""
    cut = common.rfind("\n\n")
    return common[: cut + 2] if cut >= 0 else ""
