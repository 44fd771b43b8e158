"""``xlt generate``: translate (or continue) prompts into a target language with a hedged sampling pool, pick one
candidate per prompt by greedy, MBR or X-MBR, and report off-target rate and chrF/BLEU per selection method.

- **Prompts**: a JSONL file (``{"id", "text"}`` to translate from ``--source``, or ``{"id", "prompt"}`` used verbatim;
  an optional ``ref`` is the target-language reference) or a parallel corpus (``bible``: the ``--split`` verses in
  ``--source`` with their ``--target`` verses as references, the first ``--n``).
- **Target conditioning** (``condition``): ``tag`` prepends the model's ``<2xx>`` token (Johnson et al.; add it with
  ``xlt data tag``); ``instruction`` uses LMT's template "Translate the following text from {src} into {tgt}:\\n{src}:
  {text}\\n{tgt}:", inside the tokenizer's chat template when it has one; ``auto`` = tag when the tokenizer has it, else
  instruction. Generation stops at the end-of-sequence token or a newline; the text is the first line.
- **Pool** (:mod:`xlt.infer.pool`): e.g. ``greedy,0.3x2,0.7x3,1.0x2``, decoded in one loop by
  :func:`xlt.infer.decode.generate_pool`.
- **Selection** (:mod:`xlt.infer.mbr`): ``greedy`` (the pool's greedy candidate), ``mbr`` (evidence: the pool;
  utility chrF by default) or ``xmbr`` (evidence adds pools generated for the same prompt in ``evidence_langs``;
  utility e5 by default). The record keeps every candidate and which one each method chose; the summary scores each
  method that applies, so one run compares them.
- **Summary** (the manifest's ``stats``, also ``summary.json``): per method, the off-target rate (py3langid, or
  ``--lid script``) with the references' own rate as the floor, and corpus chrF and BLEU with sacrebleu's signatures
  when references are given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from xlt.errors import XltError
from xlt.options import option, positive

LMT_TEMPLATE = "Translate the following text from {src} into {tgt}:\n{src}: {text}\n{tgt}:"
METHODS = ("greedy", "mbr", "xmbr")


@dataclass
class GenerateOptions:
    model: str = option(help="the generator: a packaged name (smollm2), an HF folder or an xlt adapt method folder")
    prompts: str = option(help="a JSONL of {id, text|prompt[, ref]}, or a parallel corpus (bible) with --source/--split/--n")
    target: str = option(help="the language to generate in (ISO 639-1/3)")
    source: str = option("eng", "the language of the prompts' text (for the instruction and corpus prompts)")
    split: str = option("test", "corpus prompts: the split")
    n: int | None = option(100, "corpus prompts: how many (None: all)", check=positive)
    pool: str = option("greedy,0.3x2,0.7x3,1.0x2", "the sampling pool: greedy and TEMPxCOUNT items")
    select: Literal["greedy", "mbr", "xmbr"] = option("mbr", "which candidate the record's text is")
    utility: str | None = option(None, "MBR utility: chrf, chrf++, e5 (default: chrf for mbr, e5 for xmbr)")
    evidence_langs: list[str] | None = option(None, "X-MBR: languages whose pools are added to the evidence")
    condition: Literal["auto", "tag", "instruction"] = option("auto", "how the target is asked for")
    max_new_tokens: int = option(64, "tokens per candidate at most", check=positive)
    batch_size: int = option(16, "prompts per prefill", check=positive)
    lid: Literal["py3langid", "script"] = option("py3langid", "language identifier of the off-target rate")
    e5: str = option("e5", "the sentence encoder of the e5 utility (packaged name or folder)")


@dataclass(frozen=True)
class Prompt:
    key: str
    text: str | None  # the source text (None for a verbatim prompt)
    prompt: str | None  # a verbatim prompt
    ref: str | None


def read_prompts(spec: str, source: str, target: str, split: str, n: int | None) -> list[Prompt]:
    """Prompts from a JSONL file, or from a parallel corpus with references."""
    path = Path(spec)
    if path.suffix == ".jsonl" or (path.is_file() and not spec.startswith(("bible", "jsonl:", "text:"))):
        return _read_jsonl_prompts(path)[:n] if n else _read_jsonl_prompts(path)
    from xlt.corpora import open_corpus

    corpus = open_corpus(spec)
    pairs = corpus.parallel(source, target, split)
    return [Prompt(k, a, None, b) for k, a, b in (pairs[:n] if n else pairs)]


def _read_jsonl_prompts(path: Path) -> list[Prompt]:
    from xlt.util import iter_jsonl

    out = []
    for i, rec in iter_jsonl(path, "prompts"):
        if not isinstance(rec.get("text", rec.get("prompt")), str):
            raise XltError(f"{path.name} line {i} has no 'text' or 'prompt' string",
                           "give each record text (to translate) or prompt (verbatim)")
        key = str(rec.get("id", rec.get("key", i)))
        out.append(Prompt(key, rec.get("text"), rec.get("prompt") if "text" not in rec else None, rec.get("ref")))
    if not out:
        raise XltError(f"prompts file {path} is empty", "give at least one record")
    return out


def load_generator(spec: str):
    """``(model, tokenizer, portable name)`` of one generator: a packaged name, an HF folder or a method folder."""
    from xlt.eval.evaluate import resolve_models

    models = resolve_models([spec])
    if len(models) != 1:
        raise XltError(f"{spec} holds {len(models)} models ({', '.join(m.name for m in models)})",
                       "give one model: a method folder inside the run (e.g. RUN/overlap)")
    model, tok = models[0].loader()
    return model.eval(), tok, models[0].name


def conditioning(tok, target: str, condition: str) -> tuple[str, str | None]:
    """``("tag", "<2sw>")`` or ``("instruction", None)``; ``tag`` without the token in the vocabulary is refused."""
    from xlt.data.builders.tag import tag_of

    tag = tag_of(target)
    has = tag in tok.get_vocab()
    if condition == "tag" and not has:
        raise XltError(f"the tokenizer has no {tag} token for {target}",
                       f"add it with `xlt data tag --input DATA.jsonl --model MODEL --langs {target} --out DIR` (DIR/model has "
                       "the token; train it on the tagged data), "
                       "or use --condition instruction")
    if condition == "tag" or (condition == "auto" and has):
        return "tag", tag
    return "instruction", None


def render_prompt(tok, p: Prompt, src_name: str, tgt_name: str, mode: str, tag: str | None) -> str:
    if p.prompt is not None:
        return f"{tag} {p.prompt}" if tag else p.prompt
    if mode == "tag":
        return f"{tag} {p.text}"
    text = LMT_TEMPLATE.format(src=src_name, tgt=tgt_name, text=p.text)
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return text


def encode_prompt(tok, text: str) -> list[int]:
    """Token ids of a rendered prompt: chat-template text as it is (it carries its own start tokens), other text
    after the model's start tokens as the evaluation adds them (:func:`xlt.eval.bpb.first_token_ids`)."""
    from xlt.eval.bpb import first_token_ids

    ids = tok(text, add_special_tokens=False)["input_ids"]
    specials = set(getattr(tok, "all_special_ids", []))
    return ids if ids and ids[0] in specials else first_token_ids(tok) + ids


def stop_ids(tok) -> list[int]:
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    return [t for t in {tok.eos_token_id, *getattr(tok, "additional_stop_ids", [])} if t is not None] + (nl if len(nl) == 1 else [])


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


class Generate:
    """The builder-shaped entry that :func:`generate` runs on the data engine."""

    description = "generate in a target language with a sampling pool and greedy/MBR/X-MBR selection"
    options = GenerateOptions
    command = "xlt generate"

    def records(self, ctx, o: GenerateOptions) -> Iterator[dict]:
        from xlt.infer.decode import generate_pool
        from xlt.infer.pool import parse_pool
        from xlt.languages import resolve

        pool = parse_pool(o.pool)
        tgt, src = resolve(o.target), resolve(o.source)
        evid = [resolve(l) for l in (o.evidence_langs or [])]
        if o.select == "xmbr" and not evid:
            raise XltError("--select xmbr needs --evidence-langs (the languages whose pools join the evidence)",
                           "e.g. --evidence-langs en,fr, or use --select mbr")
        if any(l == tgt for l in evid):
            raise XltError(f"--evidence-langs lists the target {tgt.code}", "list only other languages")
        utility = o.utility or ("e5" if o.select == "xmbr" else "chrf")
        lid = self._lid(o, tgt)
        prompts = read_prompts(o.prompts, src.code, tgt.code, o.split, o.n)
        model, tok, name = load_generator(o.model)
        mode, tag = conditioning(tok, tgt.code, o.condition)
        embedder = None
        if utility == "e5" and (evid or o.select != "greedy"):
            from xlt.infer.embed import E5Embedder

            embedder = E5Embedder(o.e5)
        gen = {"model": name, "pool": pool.describe(), "max_new_tokens": o.max_new_tokens, "condition": mode,
               "tag": tag, "utility": utility, "seed": ctx.seed}
        chosen: dict[str, list[str]] = {m: [] for m in METHODS}
        refs: list[str | None] = []
        for chunk in ctx.chunks(prompts):
            texts = [render_prompt(tok, p, src.name, tgt.name, mode, tag) for p in chunk]
            cands = generate_pool(model, tok, [encode_prompt(tok, t) for t in texts], pool,
                                  max_new_tokens=o.max_new_tokens, batch_size=o.batch_size,
                                  seed=ctx.seed, eos_token_ids=stop_ids(tok), progress=ctx.show_progress,
                                  prompt_keys=[p.key for p in chunk])
            evidence = {l.code: self._evidence_pool(model, tok, chunk, l, src, o, pool, ctx.seed) for l in evid}
            for i, (p, prompt, cs) in enumerate(zip(chunk, texts, cands)):
                outs = [first_line(c.text) for c in cs]
                sel = self._select(outs, {l: ev[i] for l, ev in evidence.items()}, tgt.code, utility, embedder, pool)
                for m, j in sel.items():
                    chosen[m].append(outs[j])
                refs.append(p.ref)
                rec = {"key": p.key, "langs": [src.code, tgt.code] if p.text is not None else [tgt.code],
                       "origin": "synthetic", "prompt": prompt}
                if p.text is not None:
                    rec["source"] = p.text
                if p.ref is not None:
                    rec["ref"] = p.ref
                # no log-probabilities here: they differ in the last digits between batch shapes, and the file is
                # byte-identical for any batch and chunk size (generate_pool's Candidate has them)
                rec.update({"candidates": [{"text": t, "temperature": c.temperature, "sample": c.sample,
                                            "finished": c.finished}
                                           for t, c in zip(outs, cs)],
                            "selected": sel, "select": o.select, "text": outs[sel[o.select]], "generator": gen})
                if evidence:
                    rec["evidence"] = {l: ev[i] for l, ev in evidence.items()}
                yield rec
        ctx.extra.update(summarise(chosen, refs, tgt.code, lid, o.lid))
        ctx.extra["generator"] = gen

    @staticmethod
    def _lid(o: GenerateOptions, tgt):
        from xlt.eval.script import lid_for

        lid = lid_for(o.lid, tgt.code)
        if lid is None:
            from xlt.eval.offtarget import py3langid_label

            try:
                py3langid_label(tgt)
            except XltError as e:
                raise XltError(e.problem, f"use --lid script (compares scripts only), or {e.fix}") from None
        return lid

    @staticmethod
    def _evidence_pool(model, tok, chunk, lang, src, o, pool, seed) -> list[list[str]]:
        """The pool generated for each prompt in evidence language ``lang`` (X-MBR)."""
        from xlt.infer.decode import generate_pool

        mode, tag = conditioning(tok, lang.code, "auto" if o.condition == "auto" else o.condition)
        texts = [render_prompt(tok, p, src.name, lang.name, mode, tag) for p in chunk]
        cands = generate_pool(model, tok, [encode_prompt(tok, t) for t in texts], pool,
                              max_new_tokens=o.max_new_tokens, batch_size=o.batch_size,
                              seed=seed, eos_token_ids=stop_ids(tok), prompt_keys=[f"{p.key}/{lang.code}" for p in chunk])
        return [[first_line(c.text) for c in cs] for cs in cands]

    @staticmethod
    def _select(outs: list[str], evidence: dict[str, list[str]], target: str, utility: str, embedder, pool) -> dict[str, int]:
        from xlt.infer.mbr import mbr_select, xmbr_select

        g = pool.greedy_row
        sel = {"greedy": g if g is not None else 0}
        sel["mbr"] = mbr_select(outs, None, utility if utility != "e5" or embedder else "chrf", g, embedder).index \
            if len(outs) > 1 else 0
        if evidence:
            sel["xmbr"] = xmbr_select(outs, evidence, target, utility, g, embedder).index
        return sel


def summarise(chosen: dict[str, list[str]], refs: list[str | None], target: str, lid, lid_name: str) -> dict:
    """Off-target rate (with the references' floor) and chrF/BLEU per selection method that ran."""
    from xlt.eval.offtarget import off_target_rate

    have_refs = refs and all(r is not None for r in refs)
    out: dict[str, Any] = {"n": len(refs), "lid": lid_name, "methods": {}}
    if have_refs:
        out["off_target_floor"] = off_target_rate(list(refs), target, lid).rate
    for m, texts in chosen.items():
        if not texts:
            continue
        ot = off_target_rate(texts, target, lid)
        row: dict[str, Any] = {"off_target": ot.rate, "off_target_signature": ot.signature,
                               "labels": dict(list(ot.labels.items())[:5])}
        if have_refs:
            from xlt.eval.mt import mt_scores

            for name, s in mt_scores(texts, list(refs), ("chrf", "bleu")).items():
                row[name] = round(s.score, 4)
                row[f"{name}_signature"] = s.signature
        out["methods"][m] = row
    return out


def generate(model: str, prompts: str, target: str, out: str | os.PathLike, *, seed: int = 0,
             overwrite: bool = False, chunk_size: int = 1000, show_progress: bool = False, **options: Any) -> dict:
    """Python API of ``xlt generate`` (same defaults): writes ``out`` (JSONL, manifest beside it) and
    ``<out>.summary.json`` (or ``OUT/summary.json`` for a folder); returns the summary."""
    from xlt import options as opts
    from xlt.data.engine import output_paths, run_entry
    from xlt.util import write_json_atomic

    entry = Generate()
    o = opts.build(GenerateOptions, {"model": model, "prompts": prompts, "target": target, **options}, "xlt generate")
    manifest = run_entry(entry, "generate", o, out, seed=seed, overwrite=overwrite, chunk_size=chunk_size,
                         show_progress=show_progress)
    data, _, folder = output_paths(out)
    summary_path = Path(out) / "summary.json" if folder else data.with_name(data.stem + ".summary.json")
    summary = {"command": manifest["command"], **manifest["stats"]}
    write_json_atomic(summary_path, summary)
    return summary
