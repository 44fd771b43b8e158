import pytest

from xlt.corpora import open_corpus
from xlt.errors import XltError

uroman = pytest.importorskip("uroman")

from xlt.data import RomanizedCorpus, romanize_texts  # noqa: E402
from xlt.data.romanize import non_latin_letters  # noqa: E402
from xlt.languages import resolve  # noqa: E402


def test_romanizes_known_scripts_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_CACHE", str(tmp_path))
    out = romanize_texts(["Привет, как дела?", "नमस्ते दुनिया"], "rus")
    assert out[0] == "Privet, kak dela?" and out[1].startswith("namaste")
    assert len(list((tmp_path / "romanized").glob("*.json"))) == 1
    assert romanize_texts(["Привет, как дела?", "नमस्ते दुनिया"], "rus") == out


def test_unknown_script_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_CACHE", str(tmp_path))
    with pytest.raises(XltError) as e:
        romanize_texts(["\U00012000\U00012001\U00012002 \U00012003"], None)
    assert "uroman does not know the CUNEIFORM script" in e.value.problem and "--romanize" in e.value.fix
    assert non_latin_letters("abc") == (3, 0, None)


def test_romanized_corpus_keeps_keys_and_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_CACHE", str(tmp_path))
    p = tmp_path / "ru.txt"
    p.write_text("\n".join(f"Привет мир номер {i}" for i in range(300)), encoding="utf-8")
    base = open_corpus(str(p), "ru")
    rc = RomanizedCorpus(base, resolve("ru"))
    for split in ("train", "dev", "test"):
        native = base.documents("ru", split)
        roman = rc.documents("ru", split)
        assert [d.key for d in roman] == [d.key for d in native]
    assert rc.texts("ru", "train")[0].startswith("Privet mir")
