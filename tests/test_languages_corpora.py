import json

import pytest

from xlt.corpora import TextCorpus, count, hash_split, open_corpus
from xlt.errors import XltError
from xlt.languages import resolve


def test_codes_resolve_to_one_language():
    assert resolve("sw") == resolve("swa") == resolve("swh") == resolve("SW") == resolve("sw-KE")
    assert resolve("sw").code == "swh" and resolve("sw").alpha2 == "sw"
    assert resolve("en").code == "eng" and resolve("ar").code == "arb" and resolve("ny").code == "nya"


def test_unknown_code_names_problem_and_fix():
    with pytest.raises(XltError) as e:
        resolve("swhh")
    assert "unknown language code 'swhh'" in e.value.problem
    assert "swh" in e.value.fix  # close match suggested


def test_text_corpus_split_is_deterministic_and_complete(tmp_path):
    lines = [f"line number {i} with words" for i in range(400)]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(lines) + "\n\n   \n", encoding="utf-8")
    c = open_corpus(f"text:{p}", "sw")
    parts = {s: c.texts("sw", s) for s in ("train", "dev", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(lines)  # blank lines dropped, nothing lost
    assert 0 < len(parts["dev"]) < 60 and 0 < len(parts["test"]) < 60
    # same split in a fresh object and for shuffled input (hash of content, not position)
    p2 = tmp_path / "t2.txt"
    p2.write_text("\n".join(reversed(lines)), encoding="utf-8")
    assert sorted(open_corpus(str(p2), "sw").texts("sw", "dev")) == sorted(parts["dev"])
    assert hash_split("abc") == hash_split("abc")


def test_counts():
    st = count(["héllo wörld", "a b c"])
    assert (st.documents, st.words, st.characters, st.bytes) == (2, 5, 16, 18)


def test_jsonl_parallel_by_key(parallel_jsonl):
    c = open_corpus(str(parallel_jsonl))
    assert {l.code for l in c.languages()} == {"eng", "swh"}
    par = c.parallel("sw", "en")
    assert len(par) == 600 and par[0][0] == "0"
    assert c.stats("sw").documents == 600


def test_hf_dataset_corpus(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"content": ["habari ya leo", "  ", "asante sana"], "id": ["a", "b", "c"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    c = open_corpus(f"hf:{tmp_path / 'ds'}#content", "sw")
    assert c.texts("sw") == ["habari ya leo", "asante sana"]
    with pytest.raises(XltError, match="no column 'text'"):
        open_corpus(f"hf:{tmp_path / 'ds'}", "sw").texts("sw")


@pytest.mark.parametrize("content", ["", "   \n\t\n  "])
def test_empty_or_whitespace_corpus(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(XltError, match="empty or whitespace only"):
        open_corpus(str(p), "sw").texts("sw")


def test_non_utf8_file_names_line_and_fix(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("first line\nsecond línea\n".encode("latin-1"))
    with pytest.raises(XltError) as e:
        open_corpus(str(p), "sw").texts("sw")
    assert "not UTF-8" in e.value.problem and "line 2" in e.value.problem and "iconv" in e.value.fix


def test_language_not_in_corpus(parallel_jsonl):
    with pytest.raises(XltError) as e:
        open_corpus(str(parallel_jsonl)).texts("hi")
    assert "Hindi" in e.value.problem and "not in the" in e.value.problem and "eng" in e.value.fix


def test_unknown_corpus_spec():
    with pytest.raises(XltError, match="cannot open corpus"):
        open_corpus("no/such/file.txt", "sw")


def test_jsonl_bad_record(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(XltError, match="no field 'text'"):
        open_corpus(str(p), "sw").texts("sw")
