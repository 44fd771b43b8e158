"""``transtok`` (trans-tokenization) and its IBM Model 1 aligner."""

import copy
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import byte_bpe_tokenizer, make_language, sentences
from xlt.corpora import TextCorpus, open_corpus
from xlt.errors import XltError
from xlt.models import tiny_model
from xlt.vocab import TransferContext, TransferMapping, available_inits, build_mapping, mix_rows, transfer_model
from xlt.vocab.align import ibm1_align, ibm1_table, parse_translation_table, rows_from_counts
from xlt.vocab.baselines import overlap_init


@pytest.fixture(scope="module")
def target_tokenizer(target_texts):
    return byte_bpe_tokenizer(target_texts, 450)


@pytest.fixture(scope="module")
def corpus(parallel_jsonl):
    return open_corpus(str(parallel_jsonl))


def _ctx(src, tgt, corpus, **options):
    return TransferContext(src, tgt, corpus=corpus, source_lang="en", target_lang="sw", options=options)


# -- the aligner ------------------------------------------------------------------------------------

def _synthetic(n_pairs=1500, vocab=40, noise_ids=10, seed=0):
    """Target token k translates source token k; shuffled order, 10% substitutions, inserted noise tokens."""
    rng = np.random.default_rng(seed)
    zipf = 1 / np.arange(1, vocab + 1)
    zipf /= zipf.sum()
    src, tgt = [], []
    for _ in range(n_pairs):
        s = rng.choice(vocab, rng.integers(3, 15), p=zipf)
        t = rng.permutation(s)
        sub = rng.random(len(t)) < 0.1
        t[sub] = rng.integers(0, vocab + noise_ids, sub.sum())
        t = np.insert(t, rng.integers(0, len(t) + 1, 2), rng.integers(vocab, vocab + noise_ids, 2))
        src.append(s.tolist()), tgt.append(t.tolist())
    return src, tgt


def test_ibm1_recovers_identity_alignment():
    src, tgt = _synthetic()
    counts = ibm1_align(src, tgt, n_src=40, n_tgt=50, iterations=5)
    assert counts.shape == (50, 40)
    best = np.asarray(counts[:40].argmax(axis=1)).ravel()
    assert (best == np.arange(40)).all()
    # most links sit on the diagonal; substituted and inserted tokens mostly go to NULL
    assert counts.diagonal().sum() / counts.sum() > 0.9


def test_ibm1_chunking_and_input_types_do_not_change_the_result():
    src, tgt = _synthetic(300)
    a = ibm1_table(src, tgt, 40, 50)
    b = ibm1_table([np.array(s) for s in src], [np.array(t) for t in tgt], 40, 50, chunk_entries=97)
    assert (a.links != b.links).nnz == 0
    np.testing.assert_allclose(a.as_matrix().toarray(), b.as_matrix().toarray(), rtol=1e-12)
    # t(.|s) is a distribution over target tokens for every source id that occurs
    sums = np.asarray(a.as_matrix(include_null=True).sum(axis=0)).ravel()
    np.testing.assert_allclose(sums[sums > 0], 1.0)


def test_ibm1_skips_empty_sides_and_checks_ids():
    tab = ibm1_table([[1, 2], [], [3]], [[0], [1], []], n_src=4, n_tgt=2)
    assert tab.sentence_pairs == 1 and tab.links.sum() == 1
    assert ibm1_align([], [], 3, 3).nnz == 0
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ibm1_align([[5]], [[0]], n_src=4, n_tgt=2)
    with pytest.raises(ValueError, match="2 source sequences but 1"):
        ibm1_align([[1], [2]], [[0]], 4, 2)


def test_rows_from_counts_weights_and_min_count():
    a, b, c, x = 3, 7, 1, 5
    counts = sp.csr_matrix(([30, 10, 5, 12, 9], ([0, 0, 1, 2, 2], [a, b, c, x, c])), shape=(4, 8))
    rows, has = rows_from_counts(counts, min_count=10)
    assert has.tolist() == [True, False, True, False]  # row 1: 5 < 10 dropped; row 3: nothing
    assert rows[0, a] == 0.75 and rows[0, b] == 0.25
    assert rows[2].toarray().ravel().tolist() == [0, 0, 0, 0, 0, 1, 0, 0]  # the 9 is dropped
    E = torch.randn(8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mapping = TransferMapping(rows, ["alignment", "mean", "alignment", "mean"], "transtok")
    mapping.check()
    new = mix_rows(mapping, E, seed=0)
    torch.testing.assert_close(new[0], 0.75 * E[a] + 0.25 * E[b], rtol=0, atol=1e-12)
    assert torch.equal(new[2], E[x])  # a single aligned source token is copied exactly


def test_parse_translation_table():
    src_vocab, tgt_vocab = {"Ġhaus": 0, "Ġhund": 1}, {"Ġnyumba": 0, "Ġmbwa": 1, "Ġx": 2}
    lines = ["Ġhaus\tĠnyumba\t-0.1\t30", "Ġhund\tĠnyumba\t-2.3\t10", "<eps>\tĠx\t-1\t99",
             "Ġkatze\tĠmbwa\t-1\t50", "", "Ġhund\tĠmbwa\t-0.2\t12"]
    counts, skipped = parse_translation_table(lines, src_vocab, tgt_vocab)
    assert skipped == 2 and counts.shape == (3, 2)
    assert counts.toarray().tolist() == [[30, 10], [0, 12], [0, 0]]
    with pytest.raises(ValueError, match="line 1"):
        parse_translation_table(["Ġhaus Ġnyumba 30"], src_vocab, tgt_vocab)


# -- the init ---------------------------------------------------------------------------------------

def test_registered():
    assert "transtok" in available_inits()


def test_identical_tokenizers_reproduce_source_exactly(source_tokenizer, corpus):
    tok = source_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, heads=2, tied=True, seed=0,
                       eos_token_id=tok.eos_token_id)
    mapping = build_mapping("transtok", _ctx(tok, tok, corpus, transtok_min_count=2))
    assert set(mapping.evidence) == {"overlap", "special"}  # overlap wins over any alignment
    assert mapping.notes["sentence_pairs"] > 100 and mapping.notes["alignment_links"] > 0
    x = torch.tensor([tok("Kali muna tosi. Banwe korhate!", add_special_tokens=False)["input_ids"]])
    ref = model(x).logits
    E = model.get_input_embeddings().weight.detach().clone()
    new = transfer_model(copy.deepcopy(model), tok, mapping)
    assert torch.equal(new.get_input_embeddings().weight, E)
    assert torch.equal(new(x).logits, ref)


def test_rows_stochastic_finite_and_deterministic(source_tokenizer, target_tokenizer, corpus):
    ctx = _ctx(source_tokenizer, target_tokenizer, corpus, transtok_min_count=2)
    m1 = build_mapping("transtok", ctx)  # runs mapping.check(): w >= 0, rows sum to 1
    E = torch.randn(len(source_tokenizer), 16, generator=torch.Generator().manual_seed(1))
    new = mix_rows(m1, E, seed=0)
    assert torch.isfinite(new).all() and (new.abs().sum(1) > 0).all()
    torch.manual_seed(123), np.random.seed(7)
    m2 = build_mapping("transtok", ctx)
    assert m1.evidence == m2.evidence and (m1.weights != m2.weights).nnz == 0 and m1.notes == m2.notes


def test_end_to_end_on_parallel_jsonl(source_tokenizer, target_tokenizer, corpus):
    mapping = build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, corpus, transtok_min_count=2))
    base = overlap_init(TransferContext(source_tokenizer, target_tokenizer))
    ev = np.array(mapping.evidence)
    open_rows = ~np.isin(np.array(base.evidence), ["overlap", "special"])  # rows without an exact copy
    assert (ev == "alignment").sum() >= 0.5 * open_rows.sum() > 0
    assert not (ev[~open_rows] == "alignment").any()
    other = np.flatnonzero(ev != "alignment")  # every other row is exactly the overlap init's row
    assert (mapping.weights[other] != base.weights[other]).nnz == 0
    assert [base.evidence[i] for i in other] == [mapping.evidence[i] for i in other]
    notes = mapping.summary()
    assert notes["aligner"] == "ibm1" and notes["min_count"] == 2
    assert notes["aligned_tokens"] == (ev == "alignment").sum()
    assert 400 < notes["sentence_pairs"] <= 600  # the train split of 600 aligned documents
    # the reference default: pairs seen fewer than 10 times are dropped, so fewer alignment rows
    default = build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, corpus))
    assert default.notes["min_count"] == 10
    assert (np.array(default.evidence) == "alignment").sum() < (ev == "alignment").sum()


def test_alignment_finds_word_translations(tmp_path, source_lexicon, source_texts, source_tokenizer):
    """A word-for-word 'translation' (a substitution cipher): whole-word target tokens align to their source word."""
    lexicon = [w + "o" for w in make_language(2)]
    translate = dict(zip(source_lexicon, lexicon))
    tgt_texts = [" ".join(translate[w.strip(".").lower()] for w in s.split()) for s in source_texts]
    path = tmp_path / "cipher.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, (s, t) in enumerate(zip(source_texts, tgt_texts)):
            fh.write(json.dumps({"id": i, "lang": "en", "text": s}) + "\n")
            fh.write(json.dumps({"id": i, "lang": "sw", "text": t}) + "\n")
    tgt = byte_bpe_tokenizer(tgt_texts, 450)
    mapping = build_mapping("transtok", _ctx(source_tokenizer, tgt, open_corpus(str(path)), transtok_min_count=3))
    back = {v: k for k, v in translate.items()}
    src_vocab = source_tokenizer.get_vocab()
    checked = right = 0
    for i, e in enumerate(mapping.evidence):
        tok = tgt.convert_ids_to_tokens(i)
        if e != "alignment" or not tok.startswith("Ġ") or tok[1:] not in back:
            continue
        sid = src_vocab.get("Ġ" + back[tok[1:]])
        if sid is not None:  # the source word is one source token
            checked += 1
            right += int(mapping.weights[i].toarray().argmax() == sid)
    assert checked >= 20 and right >= 0.9 * checked


def test_translation_table_option(tmp_path, source_tokenizer, target_tokenizer):
    base = overlap_init(TransferContext(source_tokenizer, target_tokenizer))
    tid = next(i for i, e in enumerate(base.evidence) if e == "pieces")
    t_tok = target_tokenizer.convert_ids_to_tokens(tid)
    a, b = source_tokenizer.convert_ids_to_tokens([300, 301])
    path = tmp_path / "table.tsv"
    path.write_text(f"{a}\t{t_tok}\t-0.3\t30\n{b}\t{t_tok}\t-1.2\t10\n{a}\tnot-a-token\t-1\t50\n", encoding="utf-8")
    m = build_mapping("transtok", TransferContext(source_tokenizer, target_tokenizer,
                                                  options={"transtok_table": str(path)}))  # no corpus needed
    assert m.evidence[tid] == "alignment" and m.weights[tid, 300] == 0.75 and m.weights[tid, 301] == 0.25
    assert m.notes["table_rows_skipped"] == 1 and m.notes["aligned_tokens"] == 1
    path.write_text("broken line\n", encoding="utf-8")
    with pytest.raises(XltError, match="cannot read translation table"):
        build_mapping("transtok", TransferContext(source_tokenizer, target_tokenizer,
                                                  options={"transtok_table": str(path)}))


def test_errors_without_parallel_text(tmp_path, source_tokenizer, target_tokenizer, target_texts):
    with pytest.raises(XltError) as e:
        build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, None))
    assert "needs a parallel corpus" in e.value.problem and "--corpus bible" in e.value.fix

    text = tmp_path / "sw.txt"
    text.write_text("\n".join(target_texts[:20]), encoding="utf-8")
    with pytest.raises(XltError) as e:  # a text corpus in one language
        build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, TextCorpus(text, "sw")))
    assert "no aligned segments between sw and en" in e.value.problem and "parallel corpus" in e.value.fix

    disjoint = tmp_path / "disjoint.jsonl"
    disjoint.write_text("\n".join(json.dumps({"id": f"{lang}{i}", "lang": lang, "text": s})
                                  for lang in ("en", "sw") for i, s in enumerate(sentences(3, 30, make_language(1)))),
                        encoding="utf-8")
    with pytest.raises(XltError) as e:  # both languages, but no shared keys
        build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, open_corpus(str(disjoint))))
    assert "no aligned segments" in e.value.problem and "no aligned documents" in e.value.problem

    with pytest.raises(XltError, match="option transtok_min_count must be > 0"):
        build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, None, transtok_min_count=0))


def test_multihead_keeps_the_source_head_beside_the_new_one(tmp_path, source_tokenizer, target_texts):
    """Hydra variant: the transferred model plus the source head; with the source head the logits over the
    source vocabulary equal the original model's for the same hidden states."""
    from conftest import byte_bpe_tokenizer
    from xlt.models import tiny_model
    from xlt.vocab import TransferContext, build_mapping, transfer_model
    from xlt.vocab.multihead import load_multihead, save_extra_head

    src = source_tokenizer
    tgt = byte_bpe_tokenizer(target_texts, 450)
    model = tiny_model("llama", vocab_size=len(src), hidden=32, layers=1, heads=2, tied=True, eos_token_id=src.eos_token_id)
    src_head = model.get_output_embeddings().weight.detach().clone()
    new = transfer_model(copy.deepcopy(model), tgt, build_mapping("overlap", TransferContext(src, tgt)))
    new.save_pretrained(tmp_path)
    tgt.save_pretrained(tmp_path)
    save_extra_head(tmp_path, "eng", src_head, src)
    mh = load_multihead(tmp_path)
    assert set(mh.heads) == {"target", "eng"} and len(mh.tokenizer) == len(tgt)
    with torch.no_grad():
        mh.use_head("eng")
        y = torch.tensor([[tgt.convert_tokens_to_ids(t) for t in tgt.convert_ids_to_tokens([1, 5, 9, 30])]])
        out = mh(y).logits
        assert out.shape[-1] == len(src) and len(mh.tokenizer) == len(src)
        # the transformer body is unchanged, so the source head over the same hidden states gives the source logits
        torch.testing.assert_close(mh.model.model(y).last_hidden_state @ src_head.T, out)
        mh.use_head("target")
        assert mh(y).logits.shape[-1] == len(tgt)
    with pytest.raises(XltError, match="no output head"):
        mh.use_head("fra")


def _fake_fast_align(tmp_path, body: str):
    """An executable standing in for fast_align: reads `-i FILE`, prints one alignment line per input line."""
    import sys

    exe = tmp_path / "fast_align"
    exe.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\npath = args[args.index('-i') + 1]\n"
                   f"open(path + '.argv', 'w').write(' '.join(args))\n{body}\n")
    exe.chmod(0o755)
    return exe


def test_fast_align_path_counts_its_links(tmp_path):
    from xlt.vocab.align import fast_align_links

    # diagonal links i-i for the shorter side: source position i, target position i
    exe = _fake_fast_align(tmp_path, "for line in open(path):\n    s, t = line.split(' ||| ')\n"
                                     "    n = min(len(s.split()), len(t.split()))\n    print(' '.join(f'{i}-{i}' for i in range(n)))")
    src = [[1, 2, 3], [2, 2], [], [4]]
    tgt = [[7, 8], [9, 9, 9], [5], [6]]
    counts, n = fast_align_links(src, tgt, 10, 12, str(exe))
    assert n == 3  # the pair with an empty source side is not written
    expected = np.zeros((12, 10))
    for s, t in [([1, 2, 3], [7, 8]), ([2, 2], [9, 9, 9]), ([4], [6])]:
        for i in range(min(len(s), len(t))):
            expected[t[i], s[i]] += 1
    assert np.array_equal(counts.toarray(), expected)  # {9: {2: 2}}: repeated links add up


def test_transtok_with_fast_align_option(tmp_path, source_tokenizer, target_tokenizer, corpus):
    exe = _fake_fast_align(tmp_path, "for line in open(path):\n    print('0-0')")
    mapping = build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, corpus, transtok_aligner="fast_align",
                                             fast_align_bin=str(exe), transtok_min_count=1))
    notes = mapping.summary()
    assert notes["aligner"] == f"fast_align:{exe}" and notes["sentence_pairs"] > 400
    assert notes["alignment_links"] == notes["sentence_pairs"]  # one link per pair, as printed
    assert "alignment" in mapping.evidence
    with pytest.raises(XltError, match="was not found") as e:
        build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, corpus, transtok_aligner="fast_align",
                                       fast_align_bin=str(tmp_path / "missing")))
    assert "fast_align_bin=PATH" in e.value.fix
    (tmp_path / "bad").mkdir()
    bad = _fake_fast_align(tmp_path / "bad", "sys.exit('boom')")
    with pytest.raises(XltError, match="fast_align failed.*boom"):
        build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, corpus, transtok_aligner="fast_align",
                                       fast_align_bin=str(bad)))
    with pytest.raises(XltError, match="option transtok_aligner must be one of ibm1, fast_align, got 'giza'"):
        build_mapping("transtok", _ctx(source_tokenizer, target_tokenizer, corpus, transtok_aligner="giza"))
