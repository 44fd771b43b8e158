"""Annotation projection (T-Projection, `xlt data project`) and the span utilities it writes with.

Toy corpora are word-for-word ciphers of English (xlt.data.toy), so the true projection of every span is known:
the same word positions in the target sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlt.data.builders.project import (COMBINED, IBM1Scorer, LMScorer, candidates, project, project_spans,
                                       read_annotated, read_gold, toy_projection_data)
from xlt.data.engine import BuildContext, read_records, run_builder
from xlt.data.spans import (Span, bio_from_spans, span_f1, spans_from_bio, whitespace, words_and_punctuation)
from xlt.data.toy import WORDS
from xlt.errors import XltError

LABELS = ("PER", "LOC", "ORG")


# -- span utilities ---------------------------------------------------------------------------------------------------
def _random_text(rng, n_tokens):
    pool = list(WORDS) + [",", ".", "ng'ombe", "Yerusalemu", "42", "«", "über"]
    return " ".join(rng.choice(pool, size=n_tokens))


def _random_aligned_spans(rng, text, tokenize):
    """Non-overlapping spans on token boundaries (adjacent spans allowed, same type included)."""
    offs = tokenize(text)
    spans, i = [], 0
    while i < len(offs):
        if rng.random() < 0.35:
            j = min(len(offs), i + int(rng.integers(1, 4)))
            spans.append(Span(offs[i][0], offs[j - 1][1], str(rng.choice(LABELS))))
            i = j
        else:
            i += 1
    return spans


@pytest.mark.parametrize("tokenize", [whitespace, words_and_punctuation])
def test_bio_round_trip_is_lossless(tokenize):
    rng = np.random.default_rng(0)
    for _ in range(300):
        text = _random_text(rng, int(rng.integers(0, 15)))
        spans = _random_aligned_spans(rng, text, tokenize)
        tokens, tags = bio_from_spans(text, spans, tokenize)
        assert [text[a:b] for a, b in tokenize(text)] == tokens
        assert sum(t.startswith("B-") for t in tags) == len(spans)
        assert spans_from_bio(tokens, tags, text) == spans


def test_bio_tags_cover_overlapping_tokens_and_refuse_shared_ones():
    text = "Yesu, mwana wa Daudi."
    tokens, tags = bio_from_spans(text, [Span(0, 4, "PER"), Span(15, 20, "PER")], words_and_punctuation)
    assert tokens == ["Yesu", ",", "mwana", "wa", "Daudi", "."]
    assert tags == ["B-PER", "O", "O", "O", "B-PER", "O"]
    # a span inside a whitespace token tags the whole token, whose offsets come back from BIO
    tokens, tags = bio_from_spans(text, [Span(0, 4, "PER")])
    assert tags[0] == "B-PER" and spans_from_bio(tokens, tags, text) == [Span(0, 5, "PER")]
    with pytest.raises(XltError, match="share a token"):
        bio_from_spans(text, [Span(0, 2, "PER"), Span(2, 4, "LOC")])
    with pytest.raises(XltError, match="outside its sentence"):
        bio_from_spans(text, [Span(3, 99, "PER")], where="record 7")


def test_spans_from_bio_reads_invalid_sequences_like_conlleval():
    toks = ["a", "b", "c", "d", "e", "f"]
    text = " ".join(toks)
    tags = ["I-PER", "I-PER", "I-LOC", "B-LOC", "O", "I-LOC"]
    assert spans_from_bio(toks, tags, text) == [Span(0, 3, "PER"), Span(4, 5, "LOC"), Span(6, 7, "LOC"),
                                                Span(10, 11, "LOC")]


def test_span_f1_values():
    gold = [[Span(0, 3, "PER"), Span(4, 8, "LOC")], [Span(0, 2, "PER")]]
    pred = [[Span(0, 3, "PER"), Span(4, 7, "LOC")], [Span(0, 2, "PER"), Span(3, 5, "ORG")]]
    r = span_f1(gold, pred)
    assert r["overall"] == pytest.approx({"precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert r["PER"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2})
    assert r["LOC"]["f1"] == 0.0 and r["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert list(r) == ["overall", "LOC", "ORG", "PER"]


def _random_tags(rng, n):
    kinds = rng.choice(["O", "B", "I"], size=n, p=[0.5, 0.25, 0.25])
    types = rng.choice(LABELS, size=n)
    return ["O" if k == "O" else f"{k}-{t}" for k, t in zip(kinds, types)]


def test_span_f1_equals_seqeval():
    pytest.importorskip("seqeval")
    from seqeval.metrics import classification_report
    from seqeval.metrics.sequence_labeling import get_entities

    rng = np.random.default_rng(1)
    for trial in range(40):
        n_sent = int(rng.integers(1, 8))
        lens = rng.integers(0, 12, size=n_sent)
        gold_tags = [_random_tags(rng, int(n)) for n in lens]
        # predictions: the gold tags with some positions re-drawn (so both hits and misses occur)
        pred_tags = [[t if rng.random() < 0.7 else _random_tags(rng, 1)[0] for t in g] for g in gold_tags]
        toks = [[f"w{i}" for i in range(int(n))] for n in lens]
        texts = [" ".join(t) for t in toks]
        gold = [spans_from_bio(t, g, x) for t, g, x in zip(toks, gold_tags, texts)]
        pred = [spans_from_bio(t, p, x) for t, p, x in zip(toks, pred_tags, texts)]
        for t, g, x, s in zip(toks, gold_tags, texts, gold):  # the chunks are seqeval's
            offs = whitespace(x)
            assert [(sp.label, sp.start, sp.end) for sp in s] == [(ty, offs[a][0], offs[b][1])
                                                                  for ty, a, b in get_entities(g)]
        ours = span_f1(gold, pred)
        if not any(gold) and not any(pred):
            assert ours["overall"]["f1"] == 0.0
            continue
        ref = classification_report(gold_tags, pred_tags, output_dict=True, zero_division=0)
        assert ours["overall"]["precision"] == pytest.approx(ref["micro avg"]["precision"], abs=1e-12), trial
        assert ours["overall"]["recall"] == pytest.approx(ref["micro avg"]["recall"], abs=1e-12), trial
        assert ours["overall"]["f1"] == pytest.approx(ref["micro avg"]["f1-score"], abs=1e-12), trial
        assert ours["overall"]["support"] == ref["micro avg"]["support"]
        types = [k for k in ours if k != "overall"]
        assert set(types) == {k for k in ref if k not in ("micro avg", "macro avg", "weighted avg")}
        for ty in types:
            assert ours[ty]["precision"] == pytest.approx(ref[ty]["precision"], abs=1e-12)
            assert ours[ty]["recall"] == pytest.approx(ref[ty]["recall"], abs=1e-12)
            assert ours[ty]["f1"] == pytest.approx(ref[ty]["f1-score"], abs=1e-12)
            assert ours[ty]["support"] == ref[ty]["support"]


# -- candidates and selection ---------------------------------------------------------------------------------------
def test_candidates_are_word_ngrams_and_token_aligned_extras():
    c = candidates("Yesu, mwana wa Daudi.", 3, extra=["wa Dau", "mwana wa", "Yesu, mwana wa Daudi", "Petro"])
    assert c.texts == ["Yesu", "Yesu, mwana", "Yesu, mwana wa Daudi", "mwana", "mwana wa", "mwana wa Daudi", "wa",
                       "wa Daudi", "Daudi"]
    assert c.n_tokens == 6 and c.tok_start.tolist() == [0, 0, 0, 2, 2, 2, 3, 3, 4]
    assert c.tok_end.tolist() == [1, 3, 5, 3, 4, 5, 4, 5, 5]
    assert len(candidates("", 4)) == 0 and len(candidates("« ; »", 4)) == 0


def test_greedy_selection_gives_an_overlapped_span_its_next_best():
    src = "alpha beta"
    spans = [Span(0, 5, "A"), Span(6, 10, "B")]
    table = {"alpha": {"x y": 3.0, "x": 2.0, "z": 0.5}, "beta": {"x y": 2.5, "y": 2.4, "z": 1.0}}

    def score(span_texts, cands):
        return np.array([[table[s].get(c, -5.0) for c in cands] for s in span_texts])

    out = project_spans(src, spans, "x y z", score, max_ngram=2)
    # alpha takes "x y" (3.0); beta's "x y" and "y" overlap it, so beta gets "z" (1.0)
    assert out == [Span(0, 3, "A"), Span(4, 5, "B")]
    assert [s.score for s in out] == [3.0, 1.0]
    # every pair scored equally: still no overlap, and each span lands nearest its own relative position
    flat = project_spans(src, spans, "x y z w", lambda s, c: np.zeros((len(s), len(c))), max_ngram=3)
    assert flat == [Span(0, 3, "A"), Span(4, 7, "B")]  # centres 1/4 and 3/4 of both sentences


def test_more_spans_than_room_leaves_spans_unprojected():
    spans = [Span(0, 1, "A"), Span(2, 3, "B"), Span(4, 5, "C")]
    out = project_spans("a b c", spans, "p q", lambda s, c: np.ones((len(s), len(c))), max_ngram=1)
    assert out == [Span(0, 1, "A"), Span(2, 3, "C")]  # equal scores: nearest relative positions first
    # with bigrams the one candidate nearest the middle span takes the whole sentence
    assert project_spans("a b c", spans, "p q", lambda s, c: np.ones((len(s), len(c))), 2) == [Span(0, 3, "B")]


# -- projection on the toy corpus ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_projection_data(tmp_path_factory.mktemp("toy"), n=60)


def _targets(data, lang="swh"):
    path = data["corpus"].split(":", 1)[1]
    return {r["id"]: r["text"] for r in map(json.loads, open(path, encoding="utf-8")) if r["lang"] == lang}


def _oracle(dicts):
    """1 for the true cipher translation of the span's words, else 0."""
    def score(span_texts, cands):
        want = [" ".join(dicts["swh"][w] for w in s.split()) for s in span_texts]
        return (np.asarray(want, dtype=object)[:, None] == np.asarray(cands, dtype=object)[None, :]).astype(float)
    return score


def test_oracle_scorer_recovers_gold(toy):
    targets = _targets(toy)
    gold = read_gold(toy["gold"], targets)
    ctx = BuildContext("project")
    recs = list(project(read_annotated(toy["annotated"]), targets, {"oracle": _oracle(toy["dicts"])},
                        gold=gold, ctx=ctx))
    assert len(recs) == 60 and ctx.extra["gold_sentences"] == 60
    assert ctx.extra["span_f1"]["oracle"]["overall"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                        "support": ctx.extra["source_spans"]}
    assert ctx.extra["source_spans"] > 100
    for r in recs:
        assert [Span(s["start"], s["end"], s["label"]) for s in r["spans"]] == sorted(
            gold[r["key"]], key=lambda s: s.start)
        assert spans_from_bio(r["tokens"], r["tags"], r["text"]) == [Span(s["start"], s["end"], s["label"])
                                                                   for s in r["spans"]]


def _f1_by_span_length(records, gold, n_words):
    g, p = [], []
    for r in records:
        keep = {(s["start"], s["end"]) for s in r["spans"] if len(s["source_text"].split()) == n_words}
        gold_n = [s for s in gold[r["key"]] if len(r["text"][s.start:s.end].split()) == n_words]
        g.append(gold_n)
        p.append([Span(s["start"], s["end"], s["label"]) for s in r["spans"] if (s["start"], s["end"]) in keep])
    return span_f1(g, p)["overall"]


def test_ibm1_scorer_recovers_most_spans(toy, tmp_path):
    out = tmp_path / "p.jsonl"
    man = run_builder("project", out, annotated=toy["annotated"], corpus=toy["corpus"], tgt="sw", scorer="ibm1",
                      gold=toy["gold"])
    recs = read_records(out)
    gold = read_gold(toy["gold"], _targets(toy))
    one, two = _f1_by_span_length(recs, gold, 1), _f1_by_span_length(recs, gold, 2)
    assert one["support"] > 50 and two["support"] >= 5
    assert one["f1"] >= 0.9 and two["f1"] >= 0.9
    assert man["stats"]["span_f1"]["ibm1"]["overall"]["f1"] >= 0.9
    assert set(man["stats"]["span_f1"]["ibm1"]) == {"overall", "PER", "LOC", "DEI"}
    assert set(man["inputs"]) == {"annotated", "corpus", "gold"}
    r = recs[0]
    assert list(r) == ["builder", "key", "langs", "origin", "text", "spans", "tokens", "tags", "unprojected"]
    assert r["langs"] == ["eng", "swh"] and r["origin"] == "synthetic"
    assert list(r["spans"][0]) == ["start", "end", "label", "text", "score", "scores", "source_start", "source_end",
                                   "source_text"]


def test_ibm1_scores_prefer_the_translation_and_punish_extra_words(toy):
    pairs = [(e, s) for e, s in zip(_targets(toy, "eng").values(), _targets(toy).values())]
    ibm1 = IBM1Scorer.train(pairs)
    d = toy["dicts"]["swh"]
    cands = [d["king"], f"{d['king']} {d['king']}", f"{d['king']} {d['city']}", d["city"], "unknownword", ",",
             f"{d['great']} {d['city']}"]
    s = ibm1(["king", "great city"], cands)
    assert s.shape == (2, 7)
    assert np.argmax(s[0]) == 0 and s[0, 0] > s[0, 1] > s[0, 3]  # the translation; a repeat is not a bonus
    assert s[0, 0] > s[0, 2] and np.isneginf(s[0, 5]) and s[0, 4] <= s[0, 3]
    assert np.argmax(s[1]) == 6 and s[1, 6] > s[1, 3] > s[1, 0]  # both words beat one, one beats none


def test_offsets_outside_a_sentence_name_the_record(toy, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = open(toy["annotated"], encoding="utf-8").read().splitlines()
    rec = json.loads(lines[3])
    rec["spans"] = [{"start": 2, "end": len(rec["text"]) + 5, "label": "PER"}]
    bad.write_text("\n".join(lines[:3] + [json.dumps(rec)] + lines[4:]) + "\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    with pytest.raises(XltError, match=f"record {rec['id']} .*line 4.*outside its sentence"):
        run_builder("project", out, annotated=str(bad), corpus=toy["corpus"], tgt="swh", scorer="ibm1")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    bad_gold = tmp_path / "gold.jsonl"
    bad_gold.write_text(json.dumps({"id": rec["id"], "spans": [{"start": -1, "end": 3, "label": "PER"}]}) + "\n")
    with pytest.raises(XltError, match=f"gold record {rec['id']}"):
        run_builder("project", out, annotated=toy["annotated"], corpus=toy["corpus"], tgt="swh", scorer="ibm1",
                    gold=str(bad_gold))


def test_scorer_option_is_checked(toy, tmp_path):
    for value, msg in (("oracle", "test scorer"), ("ibm2", "unknown scorer"), ("ibm1,ibm1", "twice")):
        with pytest.raises(XltError, match=msg):
            run_builder("project", tmp_path / "x.jsonl", annotated=toy["annotated"], corpus=toy["corpus"],
                        tgt="swh", scorer=value)


def test_candidates_file_adds_found_texts(toy, tmp_path):
    targets = _targets(toy)
    key = next(iter(targets))
    words = targets[key].split()
    extra = tmp_path / "cands.jsonl"
    extra.write_text(json.dumps({"id": key, "candidates": [" ".join(words[:5]), "notthere"]}) + "\n")
    out = tmp_path / "p.jsonl"
    man = run_builder("project", out, annotated=toy["annotated"], corpus=toy["corpus"], tgt="swh", scorer="ibm1",
                      max_ngram=1, candidates_file=str(extra))
    assert man["filters"]["candidate_found"] == {"kept": 1, "dropped": 1}


# -- the LM scorer on a tiny random model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(toy):
    from conftest import byte_bpe_tokenizer

    from xlt.models import tiny_model

    texts = list(_targets(toy, "eng").values()) + list(_targets(toy).values()) + ["English: Swahili:"]
    tok = byte_bpe_tokenizer(texts, vocab_size=300)
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, heads=2, seed=0,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model, tok


def _direct_avg_logprob(model, tok, prompt, cont):
    import torch

    p = tok(prompt)["input_ids"]
    c = tok(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        lp = model(input_ids=ids).logits.double().log_softmax(-1)[0]
    return float(sum(lp[len(p) - 1 + k, t] for k, t in enumerate(c)) / len(c))


def test_lm_scorer_matches_a_direct_computation(tiny_lm):
    model, tok = tiny_lm
    lm = LMScorer(model, tok, "English", "Swahili", batch_size=3)
    spans = ["the king", "god"]
    cands = ["muna", "tali kata", "muna muna muna", "x"]
    s = lm(spans, cands)
    assert s.shape == (2, 4) and np.isfinite(s).all()
    for i, span in enumerate(spans):
        for j, cand in enumerate(cands):
            fwd = _direct_avg_logprob(model, tok, f"English: {span}\nSwahili:", f" {cand}\n")
            rev = _direct_avg_logprob(model, tok, f"Swahili: {cand}\nEnglish:", f" {span}\n")
            assert s[i, j] == pytest.approx((fwd + rev) / 2, abs=1e-5)
    # deterministic; independent of the batch size; columns follow the candidates
    assert np.array_equal(lm(spans, cands), s)
    assert np.allclose(LMScorer(model, tok, batch_size=1)(spans, cands), s, atol=1e-5)
    assert np.allclose(LMScorer(model, tok, batch_size=64)(spans, cands[::-1]), s[:, ::-1], atol=1e-5)
    # one direction on its own, for a candidate and the same candidate repeated: per-token averages
    for cand in (cands[0], f"{cands[0]} {cands[0]}"):
        got = lm.avg_logprobs([lm.prompt("god", "English", "Swahili")], [lm.continuation(cand)])[0]
        assert got == pytest.approx(_direct_avg_logprob(model, tok, "English: god\nSwahili:", f" {cand}\n"),
                                    abs=1e-5)


def test_builder_with_lm_and_ibm1_on_a_tiny_model(toy, tiny_lm, tmp_path):
    model, tok = tiny_lm
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    small = tmp_path / "ann.jsonl"
    small.write_text("".join(open(toy["annotated"], encoding="utf-8").readlines()[:2]), encoding="utf-8")
    out = tmp_path / "p.jsonl"
    man = run_builder("project", out, annotated=str(small), corpus=toy["corpus"], tgt="swh", scorer="lm,ibm1",
                      model=str(folder), max_ngram=2, batch_size=16, gold=toy["gold"])
    recs = read_records(out)
    assert len(recs) == 2 and "model" in man["inputs"]
    assert set(man["stats"]["span_f1"]) == {"lm", "ibm1", COMBINED}
    n_src = sum(len(json.loads(l)["spans"]) for l in small.read_text().splitlines())
    assert sum(len(r["spans"]) + len(r["unprojected"]) for r in recs) == n_src
    for r in recs:
        ranges = sorted((s["start"], s["end"]) for s in r["spans"])
        assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:])), "projected spans overlap"
        for s in r["spans"]:
            assert set(s["scores"]) == {"lm", "ibm1"}
            assert s["score"] == pytest.approx((s["scores"]["lm"] + s["scores"]["ibm1"]) / 2, abs=2e-6)
            assert len(s["text"].split()) <= 2
    again = tmp_path / "q.jsonl"
    run_builder("project", again, chunk_size=1, annotated=str(small), corpus=toy["corpus"], tgt="swh",
                scorer="lm,ibm1", model=str(folder), max_ngram=2, batch_size=5, gold=toy["gold"])
    assert again.read_bytes() == out.read_bytes()
