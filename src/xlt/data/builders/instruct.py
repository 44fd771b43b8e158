"""``xlt data instruct``: cross-lingual instruction data from a parallel corpus (BayLing 2, Zhang et al. 2024,
arXiv 2411.16300; xCoT, Chai et al., AAAI 2025, arXiv 2401.07037).

BayLing 2 aligns languages with instructions built around pivot languages: translation tasks and tasks whose prompt
and answer are in different languages. Here every record is built from one document key of the corpus, in a
non-pivot language X (``--langs``; the pivot is dropped from that list if named there) and in the pivot:

- **Languages, balanced** (BayLing 2's language-balanced sampling): each record's X is drawn with
  ``p_X ∝ n_X^(1/T)`` (``T`` = ``balance_temp``), ``n_X`` = the documents of X in the split that have a pivot
  translation (the usable ones); then one of those documents uniformly. ``T = 1`` follows the data, large ``T``
  tends to uniform. ``n_records`` records are drawn (default ``Σ n_X``), record ``i`` entirely from its own
  generator ``ctx.rng("record-i")`` (language, document, mode, template, blanks, CoT language, demonstrations).
- **Modes** (drawn uniformly from ``modes``): the prompt-side language P and the answer-side language A.
  ``translate``: the translation task X → pivot (the prompt carries the X text and asks for its translation; the
  ``translation`` template, whatever ``templates`` says); ``x2pivot``: the record's template with P = X and
  A = pivot; ``pivot2x``: P = pivot, A = X. (``x2pivot`` with the translation template is the same kind of record as
  ``translate``: BayLing 2's construction details are not published.)
- **Templates** (drawn uniformly from ``templates``; :data:`BUILTIN_TEMPLATES`): ``translation``, ``continuation``
  (the first half of the P text, to be continued and written out in A) and ``cloze`` (one word of the P text blanked,
  to be filled and written out in A); every built-in answer is the A text. ``templates_file`` adds a YAML mapping
  ``name: {prompt: "...", answer: "..."}`` whose strings may use ``{src_lang}`` ``{tgt_lang}`` (English language
  names of P and A), ``{src_text}`` ``{src_prefix}`` ``{src_masked}`` ``{masked_word}`` (P side) and ``{tgt_text}``
  (A side); without ``templates`` every template of the file is used.
- **Random online CoT** (xCoT, Algorithm 1): with ``online_cot`` the answer first restates the query in a random
  other language R (the same key's text in R), then answers: ``"{R}: {R text}\\n{A}: {answer}"``. R is drawn from
  the build's languages that have the key, other than P and A; when no third language has it, R = A (as xCoT allows
  any language but the query's).
- **Code-switched demonstrations** (xCoT's xICL): ``demos = k`` prepends k demonstrations (user/assistant turns) of
  the same template and mode, built from other documents of X, whose P-side text is code-switched towards A: each
  word aligned by IBM Model 1 (:class:`xlt.data.builders.codeswitch.IBM1Aligner`, trained on the split's P-A pairs)
  is replaced by its A-side word with probability ``demo_ratio`` (xCoT's ratio is not published).

Records: ``key``, ``langs`` ``[P, A]``, ``origin`` ``real``, ``template``, ``mode``, ``messages`` (the chat:
``{role, content}`` dicts, demonstrations first), ``text`` and, per option, ``cot_lang`` / ``demo_keys``. ``text`` is
``tokenizer.apply_chat_template(messages, tokenize=False)`` with ``tokenizer`` (a local HF folder or a packaged model
name whose tokenizer has a chat template), else the plain rendering :func:`render_plain`: each turn as
``<|role|>\\n{content}\\n``.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np

from xlt.data.builders.lmt import key_table, language_name, open_languages, record_corpus_input
from xlt.data.registry import register_builder
from xlt.errors import XltError
from xlt.options import non_negative, option, positive, unit_interval

MODES = ("translate", "x2pivot", "pivot2x")
#: the placeholders a template may use (see the module docstring)
FIELDS = ("src_lang", "tgt_lang", "src_text", "src_prefix", "src_masked", "masked_word", "tgt_text")
SOURCE_FIELDS = ("src_text", "src_prefix", "src_masked")
BLANK = "____"


@dataclass(frozen=True)
class Template:
    """An instruction template: ``prompt`` and ``answer`` format strings over :data:`FIELDS`."""

    name: str
    prompt: str
    answer: str

    def render(self, fields: Mapping[str, str]) -> tuple[str, str]:
        return self.prompt.format_map(fields), self.answer.format_map(fields)


BUILTIN_TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("translation", "Translate the following text from {src_lang} into {tgt_lang}.\n{src_lang}: {src_text}",
             "{tgt_text}"),
    Template("continuation", "Here is the beginning of a text in {src_lang}:\n{src_prefix} ...\n"
             "Continue it and write the complete text in {tgt_lang}.", "{tgt_text}"),
    Template("cloze", f"Fill in the blank ({BLANK}) in this {{src_lang}} text, then write the completed text in "
             "{tgt_lang}.\n{src_masked}", "{tgt_text}"),
)}


# -- templates -------------------------------------------------------------------------------------------------
def _placeholders(text: str, where: str) -> set[str]:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as e:
        raise XltError(f"{where} is not a valid template string ({e})",
                       "write placeholders as {src_text}; a literal brace as {{ or }}") from None
    unknown = sorted(n for n in names if n not in FIELDS)
    if unknown:
        raise XltError(f"{where} uses unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}",
                       "use only " + ", ".join("{" + f + "}" for f in FIELDS))
    return names


def parse_templates(data: Any, source: str = "templates") -> dict[str, Template]:
    """Validate a mapping ``name -> {prompt, answer}`` (a loaded YAML file) into :class:`Template` s."""
    example = "translate_to: {prompt: \"Translate into {tgt_lang}: {src_text}\", answer: \"{tgt_text}\"}"
    if not isinstance(data, Mapping) or not data:
        raise XltError(f"{source} must be a mapping of template names to {{prompt, answer}}, got "
                       f"{type(data).__name__ if data is not None else 'an empty file'}", f"write e.g. {example}")
    out = {}
    for name, spec in data.items():
        where = f"template {name!r} in {source}"
        if not isinstance(name, str) or not name.strip() or "," in name:
            raise XltError(f"{where}: a template name must be a non-empty text without commas", f"write e.g. {example}")
        if not isinstance(spec, Mapping):
            raise XltError(f"{where} is a {type(spec).__name__}, not a mapping with prompt and answer",
                           f"write e.g. {example}")
        missing = [k for k in ("prompt", "answer") if k not in spec]
        extra = sorted(str(k) for k in spec if k not in ("prompt", "answer"))
        if missing or extra:
            problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
                [f"has unknown key(s) {', '.join(extra)}"] if extra else [])
            raise XltError(f"{where} {' and '.join(problems)}", f"give exactly prompt and answer, e.g. {example}")
        for k in ("prompt", "answer"):
            if not isinstance(spec[k], str) or not spec[k].strip():
                raise XltError(f"{where}: {k} must be a non-empty text, got {spec[k]!r}", f"write e.g. {example}")
        if not _placeholders(spec["prompt"], f"the prompt of {where}") & set(SOURCE_FIELDS):
            raise XltError(f"the prompt of {where} has none of {', '.join('{' + f + '}' for f in SOURCE_FIELDS)}: it "
                           "would not carry the document", "put the source text into the prompt, e.g. {src_text}")
        _placeholders(spec["answer"], f"the answer of {where}")
        out[name] = Template(name, spec["prompt"], spec["answer"])
    return out


def load_templates(path: str | Path) -> dict[str, Template]:
    """The templates of a YAML file (see :func:`parse_templates`), with one clear error per problem."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise XltError(f"templates file {path} does not exist", "give a YAML file of name: {prompt, answer} entries")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise XltError(f"templates file {path} is not valid YAML{at} ({getattr(e, 'problem', None) or e})",
                       "fix the YAML (quote strings that contain ':' or '{')") from None
    except UnicodeDecodeError:
        raise XltError(f"templates file {path} is not UTF-8", "save it as UTF-8") from None
    return parse_templates(data, str(path.name))


def select_templates(names: Sequence[str] | None, templates_file: str | None) -> dict[str, Template]:
    """The templates a build uses: ``names`` looked up in the file's templates, then the built-ins; without
    ``names``, every template of the file (or every built-in without a file)."""
    from_file = load_templates(templates_file) if templates_file else {}
    if not names:
        return dict(from_file) if from_file else dict(BUILTIN_TEMPLATES)
    known = {**BUILTIN_TEMPLATES, **from_file}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise XltError(f"unknown template(s) {', '.join(unknown)}",
                       f"choose from {', '.join(known)}, or define them in --templates-file")
    return {n: known[n] for n in dict.fromkeys(names)}


# -- sampling and fields ------------------------------------------------------------------------------------
def language_probabilities(counts: Mapping[str, int], temperature: float) -> dict[str, float]:
    """``p_l ∝ n_l^(1/T)`` over the languages with documents (temperature sampling over languages)."""
    if temperature <= 0:
        raise XltError(f"balance temperature {temperature} is not positive", "give --balance-temp > 0 (1: as the data)")
    langs = [l for l, n in counts.items() if n > 0]
    if not langs:
        raise XltError("no language has usable documents", "check the corpus, languages and split")
    n = np.array([counts[l] for l in langs], dtype=np.float64)
    w = np.exp(np.log(n) / temperature)
    return dict(zip(langs, (w / w.sum()).tolist()))


def _units(text: str, lang: str) -> tuple[list[str], str]:
    """Words (or characters for unspaced scripts) and the separator that joins them back."""
    from xlt.languages import UNSPACED

    return (list(text), "") if lang in UNSPACED else (text.split(), " ")


def template_fields(p_lang: str, p_text: str, a_lang: str, a_text: str, rng: np.random.Generator) -> dict[str, str]:
    """Every placeholder's value for one record: the prefix is the first half of the P words (at least one), the
    blank one uniformly drawn word (one draw from ``rng``)."""
    units, sep = _units(p_text, p_lang)
    k = max(1, len(units) // 2)
    blank = int(rng.integers(len(units))) if units else 0
    masked = units[:blank] + [BLANK] + units[blank + 1:] if units else [BLANK]
    return {"src_lang": language_name(p_lang), "tgt_lang": language_name(a_lang), "src_text": p_text,
            "src_prefix": sep.join(units[:k]), "src_masked": sep.join(masked),
            "masked_word": units[blank] if units else "", "tgt_text": a_text}


def render_plain(messages: Sequence[Mapping[str, str]]) -> str:
    """The rendering without a tokenizer: ``<|role|>\\n{content}\\n`` per turn."""
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)


def load_chat_tokenizer(spec: str, ctx: Any = None):
    """A tokenizer with a chat template from a local folder or a packaged model name (its files' hashes go into
    the manifest)."""
    from xlt.models.loading import load_tokenizer, resolve_source

    folder = resolve_source(spec)
    tok = load_tokenizer(folder)
    if not getattr(tok, "chat_template", None):
        raise XltError(f"the tokenizer of {spec} has no chat template",
                       "give an instruct/chat model's tokenizer, or leave out --tokenizer for the plain rendering")
    if ctx is not None and Path(folder).is_dir():
        for f in sorted(Path(folder).iterdir()):
            if f.is_file() and (f.name.startswith(("tokenizer", "chat_template", "special_tokens"))):
                ctx.add_input(f"tokenizer/{f.name}", f)
    return tok


def _check_modes(v: list[str]) -> str | None:
    bad = [m for m in v if m not in MODES]
    if bad or not v:
        return f"must list some of {', '.join(MODES)}" + (f" (not {', '.join(bad)})" if bad else "")
    return None


@dataclass
class InstructOptions:
    corpus: str = option("bible", "parallel corpus: bible, jsonl:PATH, ...")
    langs: list[str] = option(["swh", "hin"], "the non-pivot languages X (comma-separated; the pivot is ignored here)")
    pivot: str = option("eng", "the pivot language")
    split: Literal["train", "dev", "test"] = option("train", "corpus split")
    templates: list[str] | None = option(None, "templates to use (default: translation,continuation,cloze, or "
                                         "every template of --templates-file)")
    templates_file: str | None = option(None, "YAML file of name: {prompt, answer} templates")
    modes: list[str] = option(list(MODES), "modes: translate, x2pivot, pivot2x", check=_check_modes)
    online_cot: bool = option(False, "xCoT random online CoT: the answer first restates the query in another language")
    demos: int = option(0, "code-switched demonstrations prepended to each record", check=non_negative)
    demo_ratio: float = option(0.3, "share of aligned demonstration words switched to the answer language",
                               check=unit_interval)
    balance_temp: float = option(1.0, "temperature T of language sampling: p_l ∝ n_l^(1/T)", check=positive)
    n_records: int | None = option(None, "records to write (default: the usable documents of all languages)",
                                   check=positive)
    tokenizer: str | None = option(None, "HF tokenizer folder or packaged model whose chat template renders text")


class _Build:
    """Everything a record needs, loaded once: texts, usable keys per language, probabilities, aligners."""

    def __init__(self, ctx: Any, o: InstructOptions):
        self.o = o
        self.corpus, self.pivot, self.langs = open_languages(o.corpus, o.pivot, o.langs)
        self.templates = select_templates(o.templates, o.templates_file)
        if o.templates_file:
            ctx.add_input("templates", Path(o.templates_file).expanduser())
        #: the translate mode's template: the file's "translation" if it defines one, else the built-in
        self.translation = self.templates.get("translation", BUILTIN_TEMPLATES["translation"])
        self.tok = load_chat_tokenizer(o.tokenizer, ctx) if o.tokenizer else None
        record_corpus_input(ctx, self.corpus)
        self.tables = {l: key_table(self.corpus, l, o.split) for l in [self.pivot] + self.langs}
        pivot_keys = self.tables[self.pivot]
        self.usable = {x: [k for k in self.tables[x] if k in pivot_keys] for x in self.langs}
        empty = [x for x in self.langs if not self.usable[x]]
        if empty:
            raise XltError(f"the {self.corpus.name} corpus has no {o.split} documents aligned between {self.pivot} and "
                           f"{', '.join(empty)}", "use a parallel corpus whose documents share keys across languages")
        self.probs = language_probabilities({x: len(self.usable[x]) for x in self.langs}, o.balance_temp)
        self.order = list(self.probs)
        self.p = np.array([self.probs[x] for x in self.order])
        self.n_records = o.n_records or sum(len(v) for v in self.usable.values())
        self.modes = list(dict.fromkeys(o.modes))
        self.names = list(self.templates)
        self.aligners: dict[tuple[str, str], Any] = {}

    # -- pieces ---------------------------------------------------------------------------------------------
    def sides(self, mode: str, x: str) -> tuple[str, str]:
        return (self.pivot, x) if mode == "pivot2x" else (x, self.pivot)

    def aligner(self, p: str, a: str):
        """IBM-1 from P words to A words on the split's P-A pairs (for switching demonstrations)."""
        from xlt.data.builders.codeswitch import IBM1Aligner, words

        if (p, a) not in self.aligners:
            tp, ta = self.tables[p], self.tables[a]
            pairs = [(words(tp[k]), words(ta[k])) for k in tp if k in ta]
            self.aligners[(p, a)] = IBM1Aligner(pairs)
        return self.aligners[(p, a)]

    def code_switch(self, p: str, a: str, p_text: str, a_text: str, rng: np.random.Generator) -> str:
        from xlt.data.builders.codeswitch import fragments, switch, words

        sw, tw = words(p_text), words(a_text)
        frags = fragments(self.aligner(p, a).align(sw, tw), "word", sw, p_text, tw, a_text)
        return switch(p_text, frags, rng.random(len(frags)) < self.o.demo_ratio, sw, a_text, tw)[0]

    def turn(self, template: Template, p: str, a: str, key: str, rng: np.random.Generator,
             switched: bool = False) -> tuple[str, str]:
        p_text, a_text = self.tables[p][key], self.tables[a][key]
        if switched:
            p_text = self.code_switch(p, a, p_text, a_text, rng)
        return template.render(template_fields(p, p_text, a, a_text, rng))

    def cot(self, p: str, a: str, key: str, rng: np.random.Generator) -> str:
        others = [l for l in [self.pivot] + self.langs if l not in (p, a) and key in self.tables[l]]
        return others[int(rng.integers(len(others)))] if others else a

    # -- one record -----------------------------------------------------------------------------------------
    def record(self, i: int, rng: np.random.Generator) -> dict:
        x = self.order[int(rng.choice(len(self.order), p=self.p))]
        keys = self.usable[x]
        j = int(rng.integers(len(keys)))
        key = keys[j]
        mode = self.modes[int(rng.integers(len(self.modes)))]
        if mode == "translate":
            template = self.translation
        else:
            template = self.templates[self.names[int(rng.integers(len(self.names)))]]
        p, a = self.sides(mode, x)
        prompt, answer = self.turn(template, p, a, key, rng)
        extra: dict[str, Any] = {}
        if self.o.online_cot:
            r = self.cot(p, a, key, rng)
            answer = f"{language_name(r)}: {self.tables[r][key]}\n{language_name(a)}: {answer}"
            extra["cot_lang"] = r
        messages: list[dict[str, str]] = []
        if self.o.demos:
            k = min(self.o.demos, len(keys) - 1)
            picks = rng.choice(len(keys) - 1, size=k, replace=False) if k > 0 else np.array([], dtype=np.int64)
            demo_keys = [keys[int(d) + (int(d) >= j)] for d in picks]
            for dk in demo_keys:
                q, r_ = self.turn(template, p, a, dk, rng, switched=True)
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r_}]
            extra["demo_keys"] = demo_keys
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        if self.tok is not None:
            text = self.tok.apply_chat_template(messages, tokenize=False)
        else:
            text = render_plain(messages)
        return {"key": key, "langs": [p, a], "origin": "real", "template": template.name, "mode": mode,
                "messages": messages, "text": text, **extra}


def instruct_records(ctx: Any, o: InstructOptions) -> Iterator[dict]:
    """The records of ``xlt data instruct`` (see the module docstring)."""
    b = _Build(ctx, o)
    drawn: Counter = Counter()
    for chunk in ctx.chunks(range(b.n_records)):
        for i in chunk:
            rec = b.record(i, ctx.rng(f"record-{i}"))
            drawn[next(l for l in rec["langs"] if l != b.pivot)] += 1
            yield rec
    ctx.extra["languages"] = {x: {"documents": len(b.usable[x]), "probability": b.probs[x], "records": drawn[x]}
                              for x in b.order}


@register_builder("instruct")
class InstructBuilder:
    description = ("cross-lingual instructions from parallel text: templates x modes (translate, x2pivot, pivot2x), "
                   "language-balanced, online CoT, code-switched demos (BayLing 2, xCoT)")
    options = InstructOptions
    seeded = True

    def records(self, ctx: Any, o: InstructOptions) -> Iterator[dict]:
        return instruct_records(ctx, o)

    def example(self, workdir: Path) -> dict:
        from xlt.data.toy import toy_parallel

        path = Path(workdir) / "instruct_toy.jsonl"
        toy_parallel(path, langs=("eng", "swh", "fra"), n=40)
        return {"corpus": f"jsonl:{path}", "langs": ["swh", "fra"], "pivot": "eng", "online_cot": True, "demos": 1,
                "balance_temp": 2.0, "n_records": 30}
