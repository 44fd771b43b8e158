"""xlt's wechsel and focus against the reference packages on the same inputs (same word vectors, dictionary and
tokenizers), on synthetic Latin and Hangul text. Needs `make ref` (wechsel, deepfocus); skipped without them.

Every row is accounted for. Each package's matrix must equal, on every row (to 1e-6: its matrices are float32),
the dense oracle of ``vocab_oracle.py`` run with the package's own rules, its random fallback reproduced with its
generator:
- wechsel: Procrustes solved in float32 (scipy on fastText's float32 vectors); at a tie at the 10th neighbour
  ``np.argpartition`` picks any of the tied tokens (each pick must tie with the 10th).
- deepfocus: tokens overlap when their decoded strings match (``decode(id).lstrip()`` plus a word-start mark), so
  every partial-UTF-8 token (decoded "\ufffd") and whitespace token matches one source token whatever its bytes:
  copied from it and, with a vector, made an anchor.
xlt equals the oracle with the papers' rules (``test_vocab_oracle.py``); so every row where xlt and a package differ
by more than 1e-4 must be one of those differences of rules (``wechsel_against_reference`` and
``focus_against_reference`` count them by reason): none may be left unexplained.
"""

import numpy as np
import pytest

from conftest import byte_bpe_tokenizer
from vocab_oracle import (OWN_RULES_TOL, focus_against_reference, loanword_texts, script_texts, train_ft,
                          wechsel_against_reference, words_only)
from xlt.models import tiny_model
from xlt.vocab.similarity import align_spaces, focus_mapping, wechsel_mapping
from xlt.vocab.wordvec import WordVectors, load_word_vectors

pytestmark = pytest.mark.slow
fasttext = pytest.importorskip("fasttext")


@pytest.fixture(scope="module", params=["latin", "hangul"])
def setup(request, tmp_path_factory, source_texts, target_texts, source_lexicon, target_lexicon):
    d = tmp_path_factory.mktemp(f"equiv_{request.param}")
    if request.param == "latin":
        src_texts, tgt_texts, tgt_lex, tgt_size = source_texts, target_texts, target_lexicon, 450
    else:  # the source borrows some Hangul (and other scripts): partial-UTF-8 tokens on both sides
        src_texts = source_texts + loanword_texts()
        tgt_lex, tgt_texts = script_texts("hangul")
        tgt_size = 360
    src_tok = byte_bpe_tokenizer(src_texts, 400 if request.param == "latin" else 520)
    tgt_tok = byte_bpe_tokenizer(tgt_texts, tgt_size)
    E = tiny_model("llama", vocab_size=len(src_tok), hidden=32, layers=1, heads=2, seed=3).get_input_embeddings().weight
    E = E.detach().numpy()
    ids = tgt_tok(tgt_texts, add_special_tokens=False)["input_ids"]
    lines = [" ".join(tgt_tok.convert_ids_to_tokens(x)) for x in ids]
    for name, text, kw in (("src", words_only(src_texts), {}), ("tgt", words_only(tgt_texts), {}),
                           ("tok", lines, {"minCount": 3 if request.param == "latin" else 8, "maxn": 6})):
        train_ft(d, name, text, **kw).save_model(str(d / f"{name}.bin"))
    pairs = list(zip(source_lexicon[:80], tgt_lex[:80]))
    (d / "dict.tsv").write_text("\n".join(f"{a}\t{b}" for a, b in pairs) + "\n", encoding="utf-8")
    return request.param, d, src_tok, tgt_tok, E, pairs


def test_wechsel_matches_the_reference(setup):
    wechsel = pytest.importorskip("wechsel")
    script, d, src_tok, tgt_tok, E, pairs = setup
    s_ft, t_ft = fasttext.load_model(str(d / "src.bin")), fasttext.load_model(str(d / "tgt.bin"))
    ref, info = wechsel.WECHSEL(s_ft, t_ft, bilingual_dictionary=str(d / "dict.tsv")).apply(src_tok, tgt_tok, E.copy())
    vocab, s_vocab = tgt_tok.get_vocab(), src_tok.get_vocab()
    picked = {vocab[t]: [s_vocab[x] for x in v[0]] for t, v in info.sources.items()}
    sv, tv = WordVectors(s_ft), WordVectors(t_ft)
    m = wechsel_mapping(src_tok, tgt_tok, sv, tv, align_spaces(sv, tv, pairs)[0], copy_overlap=False)
    r = wechsel_against_reference(src_tok, tgt_tok, s_ft, t_ft, pairs, E, ref, picked, m)
    own, vs = r["reference_vs_oracle_with_its_rules"], r["xlt_faithful_vs_reference"]
    assert own["unexplained_rows"] == 0 and own["max_abs_diff"] <= OWN_RULES_TOL, r
    fallback = {vocab[t] for t in info.not_found} - {i for i, e in enumerate(m.evidence) if e == "special"}
    assert own["random_rows_reproduced"] == len(fallback) == sum(e == "random" for e in m.evidence)
    assert vs["unexplained_rows"] == 0, r
    assert vs["rows_compared"] + sum(vs["rows_excluded"].values()) == len(tgt_tok)
    assert vs["rows_compared"] > 0.8 * (len(tgt_tok) - own["random_rows_reproduced"])


def test_focus_matches_the_reference(setup):
    deepfocus = pytest.importorskip("deepfocus")
    import torch

    script, d, src_tok, tgt_tok, E, _ = setup
    ref = deepfocus.FOCUS(target_tokenizer=tgt_tok, source_tokenizer=src_tok, source_embeddings=torch.from_numpy(E),
                          fasttext_model_path=str(d / "tok.bin"), verbosity="silent").numpy()
    m = focus_mapping(src_tok, tgt_tok, load_word_vectors(d / "tok.bin"))
    r = focus_against_reference(src_tok, tgt_tok, fasttext.load_model(str(d / "tok.bin")), E, ref, m)
    own, vs = r["reference_vs_oracle_with_its_rules"], r["xlt_vs_reference"]
    assert own["unexplained_rows"] == 0 and own["max_abs_diff"] <= OWN_RULES_TOL, r
    assert vs["unexplained_rows"] == 0, r
    assert vs["rows_compared"] + sum(vs["rows_excluded"].values()) == len(tgt_tok)
    assert vs["rows_compared"] > 0.3 * len(tgt_tok) and sum(e == "neighbours" for e in m.evidence) > 10
    if script == "hangul":  # issue 12's case: partial-UTF-8 anchors deepfocus invents move other tokens' mixtures
        assert own["anchors_without_a_byte_identical_source_token"] > 0
        assert vs["rows_excluded"]["mixes anchors the overlaps disagree on"] > 0
